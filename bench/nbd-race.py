#!/usr/bin/env python3
"""NBD race: q2a serve against qemu-nbd in its two best modes, same fio workloads, same run.

Runs from a fresh clone (needs: dotnet SDK, fio with the nbd engine, qemu-utils, libnbd-bin):

    python3 bench/nbd-race.py                  # 3 runs, table + JSON in bench/results/
    python3 bench/nbd-race.py --runs 1 --runtime 5 --targets q2a,qemu
    python3 bench/nbd-race.py --cluster-size 4k --l2-cache-tables 16   # a cache far smaller than the data

Targets (each served from a freshly created 4 GiB qcow2, 64 KiB clusters unless --cluster-size):
  q2a      q2a serve (this checkout, Release build) with --q2a-args (default: none)
  qemu     qemu-nbd --cache=none --aio=native   (O_DIRECT, the safe production mode)
  qemu-wb  qemu-nbd --cache=writeback --aio=threads (page cache; flushes still honoured)
  q2a-bitmap  q2a serve as above, the image carrying one enabled persistent dirty bitmap (its cost)

Workloads (fio, one job, one connection, --randrepeat=1 so every target gets the same offsets):
  seqwrite   1 MiB writes, QD8, 1 GiB, one flush at the end (allocating)
  seqread    1 MiB reads, QD8, the 1 GiB written above
  randwrite  4 KiB random writes, QD16, time based, one flush at the end (overwrites)
  randread   4 KiB random reads, QD16, time based
  allocwrite 4 KiB writes, QD16, one per 64 KiB cluster in shuffled order (every write allocates
             and fills the rest of its cluster), replayed from an iolog so all targets match

For each job: throughput, server CPU (utime+stime of the server's process group, from /proc)
in microseconds per I/O, and the server's peak RSS (VmHWM summed over the group). The page cache is
dropped before every job when we may (root), so no target reads another's cached data.
After each phase the server is stopped and the image must pass `qemu-img check`.

The summary gives, per workload, the median of the runs and q2a / best qemu mode, beside the
targets issue 8 sets (seq >= 1.1x, rand >= 1.3x, allocwrite >= 4x). Exit 0 when the runs
completed (whatever the ratios), 2 on a set-up error, 3 when a server or check failed.

Why Python and not bash: the report needs JSON parsing and medians; keeping it in one readable
file beats a pipeline of jq and awk. `../shared/bench/nbd-fio.sh` stays the referee for the
figures we publish; this script is how anyone reproduces them from a clone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
Q2A_DLL = REPO / "src/Qcow2Actors.Cli/bin/Release/net10.0/q2a.dll"
CLUSTER = 64 * 1024  # allocwrite's stride; the image's cluster size is --cluster-size
WORKLOADS = ["seqwrite", "seqread", "randwrite", "randread", "allocwrite"]
TARGET_RATIO = {"seqwrite": 1.1, "seqread": 1.1, "randwrite": 1.3, "randread": 1.3, "allocwrite": 4.0}
CLK_TCK = os.sysconf("SC_CLK_TCK")


class RaceError(Exception):
    """A failure that ends the run with one line (exit 3)."""


def log(msg: str) -> None:
    print(f"[nbd-race {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command name: state, ppid, pgrp, ...
        if int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


def group_cpu_seconds(pgid: int) -> float:
    total = 0
    for pid in group_pids(pgid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLK_TCK


def group_peak_rss_kib(pgid: int) -> int:
    total = 0
    for pid in group_pids(pgid):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def drop_caches() -> None:
    subprocess.run(["sync"], check=False)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        pass  # not root: targets may then read each other's page cache; said in the report


class Server:
    """One NBD server in its own process group, stopped by that group's id only."""

    def __init__(self, name: str, argv: list[str], port: int, logfile: Path):
        self.name = name
        self.port = port
        self.uri = f"nbd://127.0.0.1:{port}"
        self._log = open(logfile, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.logfile = logfile
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RaceError(f"{name} exited with {self.proc.returncode} before serving: {self.tail()}")
            probe = subprocess.run(["nbdinfo", "--size", self.uri], capture_output=True)
            if probe.returncode == 0:
                return
            time.sleep(0.2)
        self.stop()
        raise RaceError(f"{name} did not answer NBD on port {port} within 60 s: {self.tail()}")

    def tail(self) -> str:
        try:
            return " | ".join(self.logfile.read_text(errors="replace").strip().splitlines()[-3:])
        except OSError:
            return ""

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def server_argv(target: str, image: Path, port: int, args: argparse.Namespace, work: Path) -> list[str]:
    if target.startswith("q2a"):
        extra = shlex.split(args.q2a_args)
        if args.l2_cache_tables:
            # The same cache for both sides: q2a counts tables, qemu counts bytes (tables x cluster size).
            conf = work / "q2a-race.conf"
            conf.write_text(f"qcow2actors.engine.l2-cache-size = {args.l2_cache_tables}\n"
                            f"qcow2actors.engine.max-live-table-actors = {args.l2_cache_tables}\n")
            extra += ["--config", str(conf)]
        return ["dotnet", str(Q2A_DLL), "serve", "--port", str(port), *extra, str(image)]
    cache, aio = ("none", "native") if target == "qemu" else ("writeback", "threads")
    source = [str(image)]
    fmt = ["-f", "qcow2"]
    if args.l2_cache_tables:
        source = ["--image-opts", f"driver=qcow2,file.driver=file,file.filename={image},"
                  f"l2-cache-size={args.l2_cache_tables * args.cluster_bytes}"]
        fmt = []
    return ["qemu-nbd", *fmt, f"--cache={cache}", f"--aio={aio}", "--persistent", "--shared=4",
            "-b", "127.0.0.1", "-p", str(port), *source]


def fio_job(name: str, uri: str, runtime: int, seq_size: str, iolog: Path) -> list[str]:
    common = ["fio", f"--name={name}", "--ioengine=nbd", f"--uri={uri}", "--numjobs=1", "--randrepeat=1",
              "--output-format=json"]
    per = {
        "seqwrite": ["--rw=write", "--bs=1M", "--iodepth=8", f"--size={seq_size}", "--end_fsync=1"],
        "seqread": ["--rw=read", "--bs=1M", "--iodepth=8", f"--size={seq_size}"],
        "randwrite": ["--rw=randwrite", "--bs=4k", "--iodepth=16", f"--size={seq_size}", "--time_based",
                      f"--runtime={runtime}", "--norandommap", "--end_fsync=1"],
        "randread": ["--rw=randread", "--bs=4k", "--iodepth=16", f"--size={seq_size}", "--time_based",
                     f"--runtime={runtime}", "--norandommap"],
        "allocwrite": [f"--read_iolog={iolog}", "--iodepth=16", f"--runtime={runtime}", "--end_fsync=1"],
    }
    return common + per[name]


def write_iolog(path: Path, image_bytes: int, seed: int = 2026) -> None:
    clusters = list(range(image_bytes // CLUSTER))
    rng = random.Random(seed)
    rng.shuffle(clusters)
    with open(path, "w") as f:
        f.write("fio version 2 iolog\nnbd add\nnbd open\n")
        for c in clusters:
            f.write(f"nbd write {c * CLUSTER + rng.randrange(CLUSTER // 4096) * 4096} 4096\n")
        f.write("nbd close\n")


def run_job(server: Server, name: str, args: argparse.Namespace, iolog: Path, outdir: Path) -> dict:
    drop_caches()
    cpu0 = group_cpu_seconds(server.proc.pid)
    cmd = fio_job(name, server.uri, args.runtime, args.seq_size, iolog)
    res = subprocess.run(cmd, capture_output=True, text=True)
    cpu1 = group_cpu_seconds(server.proc.pid)
    (outdir / f"{server.name}-{name}.json").write_text(res.stdout)
    if res.returncode != 0:
        raise RaceError(f"fio {name} against {server.name} failed ({res.returncode}): {res.stderr.strip()[-300:]} {server.tail()}")
    job = json.loads(res.stdout[res.stdout.index("{"):])["jobs"][0]
    side = job["read"] if name in ("seqread", "randread") else job["write"]
    ios = side["total_ios"]
    return {
        "iops": side["iops"],
        "mibs": side["bw_bytes"] / (1 << 20),
        "ios": ios,
        "cpu_us_per_io": (cpu1 - cpu0) * 1e6 / ios if ios else None,
        "clat_p99_us": side["clat_ns"]["percentile"].get("99.000000", 0) / 1000,
    }


def check_image(image: Path) -> None:
    res = subprocess.run(["qemu-img", "check", "-f", "qcow2", str(image)], capture_output=True, text=True)
    if res.returncode != 0:
        raise RaceError(f"qemu-img check {image.name} exited {res.returncode}: {res.stdout.strip()[-300:]}")


def run_target(target: str, args: argparse.Namespace, work: Path, iolog: Path, outdir: Path) -> dict:
    results: dict = {}
    peak = 0
    for phase, jobs in (("A", WORKLOADS[:4]), ("B", WORKLOADS[4:])):
        # --workloads keeps a subset; the reads still need the data seqwrite leaves.
        jobs = [j for j in jobs if j in args.workloads or (j == "seqwrite" and {"seqread", "randread"} & set(args.workloads))]
        if not jobs:
            continue
        image = work / f"{target}-{phase}.qcow2"
        image.unlink(missing_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"cluster_size={args.cluster_bytes}",
                        str(image), args.image_size], check=True)
        if target == "q2a-bitmap":
            # The same q2a, with one enabled persistent bitmap every write must keep.
            subprocess.run(["qemu-img", "bitmap", "--add", str(image), "backup"], check=True)
        port = free_port()
        server = Server(target, server_argv(target, image, port, args, work), port, outdir / f"{target}-{phase}.log")
        try:
            for name in jobs:
                results[name] = run_job(server, name, args, iolog, outdir)
                log(f"{target} {name}: {fmt_rate(name, results[name])}, {results[name]['cpu_us_per_io']:.1f} us CPU/io")
            peak = max(peak, group_peak_rss_kib(server.proc.pid))
        finally:
            rc = server.stop()
        if rc not in (0, -signal.SIGTERM):
            raise RaceError(f"{target} exited {rc} on SIGTERM: {server.tail()}")
        check_image(image)
        image.unlink()
    results["peak_rss_mib"] = peak / 1024
    return results


def iec_bytes(size: str) -> int:
    s = size.upper().rstrip("B").rstrip("I")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    return int(s[:-1]) * units[s[-1]] if s and s[-1] in units else int(s)


def fmt_rate(name: str, r: dict) -> str:
    return f"{r['mibs']:,.1f} MiB/s" if name.startswith("seq") else f"{r['iops']:,.0f} IOPS"


def value(name: str, r: dict) -> float:
    return r["mibs"] if name.startswith("seq") else r["iops"]


def summarize(runs: list[dict], targets: list[str]) -> str:
    lines = []
    header = f"{'workload':<11}" + "".join(f"{t:>14}" for t in targets)
    if "q2a" in targets and len(targets) > 1:
        header += f"{'q2a/best':>10}{'target':>8}"
    lines.append(header)
    for name in [w for w in WORKLOADS if all(w in r[t] for r in runs for t in targets)]:
        med = {t: statistics.median(value(name, r[t][name]) for r in runs) for t in targets}
        row = f"{name:<11}" + "".join(f"{med[t]:>14,.1f}" for t in targets)
        others = [med[t] for t in targets if t != "q2a"]
        if "q2a" in targets and others:
            ratio = med["q2a"] / max(others)
            row += f"{ratio:>10.2f}{'>=' + str(TARGET_RATIO[name]):>8}"
        lines.append(row)
    lines.append("")
    lines.append("server CPU us per I/O (median):")
    for name in [w for w in WORKLOADS if all(w in r[t] for r in runs for t in targets)]:
        lines.append(f"  {name:<11}" + "  ".join(
            f"{t} {statistics.median(r[t][name]['cpu_us_per_io'] for r in runs):.1f}" for t in targets))
    lines.append("server peak RSS MiB (max over runs): " + "  ".join(
        f"{t} {max(r[t]['peak_rss_mib'] for r in runs):.0f}" for t in targets))
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--runtime", type=int, default=10, help="seconds for the time-based jobs")
    p.add_argument("--seq-size", default="1G")
    p.add_argument("--image-size", default="4G")
    p.add_argument("--targets", default="q2a,qemu,qemu-wb")
    p.add_argument("--q2a-args", default="", help="extra arguments for q2a serve, e.g. '--cache=none'")
    p.add_argument("--workdir", default=None, help="where images live (default: a temp dir under /var/tmp)")
    p.add_argument("--out", default=None, help="result prefix (default bench/results/nbd-race-DATE)")
    p.add_argument("--cluster-size", default="64k", help="cluster size of the images (qemu-img spelling)")
    p.add_argument("--l2-cache-tables", type=int, default=0,
                   help="L2 cache for every server, in tables (qemu gets tables x cluster size bytes); 0: defaults")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="a subset of " + ",".join(WORKLOADS))
    p.add_argument("--no-build", action="store_true")
    args = p.parse_args()
    args.workloads = args.workloads.split(",")
    if unknown := [w for w in args.workloads if w not in WORKLOADS]:
        print(f"nbd-race: unknown workload '{unknown[0]}' ({', '.join(WORKLOADS)})", file=sys.stderr)
        return 2
    args.cluster_bytes = iec_bytes(args.cluster_size)

    targets = args.targets.split(",")
    for t in targets:
        if t not in ("q2a", "q2a-bitmap", "qemu", "qemu-wb"):
            print(f"nbd-race: unknown target '{t}' (q2a, q2a-bitmap, qemu, qemu-wb)", file=sys.stderr)
            return 2
    for tool in ("fio", "qemu-img", "qemu-nbd", "nbdinfo", "dotnet"):
        if shutil.which(tool) is None:
            print(f"nbd-race: missing tool: {tool}", file=sys.stderr)
            return 2
    if "q2a" in targets and not args.no_build:
        log("building q2a (Release)")
        b = subprocess.run(["dotnet", "build", str(REPO / "src/Qcow2Actors.Cli"), "-c", "Release", "-v", "q"],
                           capture_output=True, text=True)
        if b.returncode != 0:
            print(f"nbd-race: build failed: {b.stdout.strip()[-500:]}", file=sys.stderr)
            return 2

    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M")
    prefix = Path(args.out) if args.out else REPO / f"bench/results/nbd-race-{stamp}"
    raw_dir = Path(tempfile.mkdtemp(prefix="nbd-race-fio-"))
    work = Path(tempfile.mkdtemp(prefix="nbd-race-", dir=args.workdir or "/var/tmp"))
    image_bytes = iec_bytes(args.image_size)
    iolog = work / "alloc.iolog"
    write_iolog(iolog, image_bytes)
    runs = []
    try:
        for i in range(args.runs):
            run = {}
            for t in targets:
                log(f"run {i + 1}/{args.runs}: {t}")
                run[t] = run_target(t, args, work, iolog, raw_dir)
            runs.append(run)
    except RaceError as e:
        print(f"nbd-race: {e}", file=sys.stderr)
        return 3
    finally:
        shutil.rmtree(work, ignore_errors=True)

    report = summarize(runs, targets)
    note = "" if os.geteuid() == 0 else "\n(not root: page cache was not dropped between jobs)"
    cache = f", L2 cache {args.l2_cache_tables} tables" if args.l2_cache_tables else ""
    text = (f"nbd-race {stamp}: {args.runs} run(s), runtime {args.runtime}s, targets {args.targets}, "
            f"cluster {args.cluster_size}{cache}, q2a args '{args.q2a_args}'{note}\n\n{report}\n")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{prefix}.txt").write_text(text)
    Path(f"{prefix}.json").write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
    print(text)
    print(f"written: {prefix}.txt, {prefix}.json (fio JSON per job: {raw_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
