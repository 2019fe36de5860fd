#!/usr/bin/env bash
# What `q2a serve --record` costs: fio's nbd engine writes 4k at random (QD16), once through a plain
# `q2a serve` and once through `q2a serve --record LOG`, alternating, each on a fresh 1 GiB qcow2 image;
# then the same with a FLUSH every 32 writes (each flush also fdatasyncs the log).
# Usage: [Q2A_DLL=.../q2a.dll] flock /tmp/q2a-cpu.lock bench/record-overhead.sh [SECONDS] [ROUNDS]   (needs a Release build, fio, qemu-img)
set -euo pipefail
secs=${1:-8}
rounds=${2:-2}
root=$(cd "$(dirname "$0")/.." && pwd)
q2a="${Q2A_DLL:-$root/src/Qcow2Actors.Cli/bin/Release/net10.0/q2a.dll}"  # Q2A_DLL: another build to compare
work=$(mktemp -d /tmp/q2a-record-bench.XXXXXX)
pid=
trap '[ -n "$pid" ] && { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }; rm -rf "$work"' EXIT
cd "$work"

run() { # mode(plain|record) fsync-every
  rm -f disk.qcow2 disk.crashlog
  qemu-img create -q -f qcow2 disk.qcow2 1G
  local args=()
  [ "$1" = record ] && args=(--record "$work/disk.crashlog")
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  dotnet "$q2a" serve --port "$port" "${args[@]}" disk.qcow2 > serve.out 2> serve.err &
  pid=$!
  for _ in $(seq 150); do grep -q Serving serve.out 2>/dev/null && break; sleep 0.2; done
  grep -q Serving serve.out || { cat serve.err >&2; exit 1; }
  local fsync=()
  [ "$2" -gt 0 ] && fsync=(--fsync="$2")
  fio --name=b --ioengine=nbd --uri="nbd://127.0.0.1:$port/disk.qcow2" --rw=randwrite --bs=4k --iodepth=16 \
    --size=1g "${fsync[@]}" --time_based --runtime="$secs" --ramp_time=1 --output-format=json 2>>fio.err \
  | python3 -c 'import json,sys; t=sys.stdin.read(); w=json.loads(t[t.index("{"):])["jobs"][0]["write"]; print("%8.0f IOPS %7.1f MiB/s" % (w["iops"], w["bw_bytes"]/1048576), end="")' \
    || { cat fio.err >&2; exit 1; }
  kill -TERM "$pid"; wait "$pid" || true; pid=
  [ "$1" = record ] && printf '  (log %s MiB)' "$(( $(stat -c %s disk.crashlog) / 1048576 ))"
  echo
}

printf '%-27s %-7s %s\n' workload mode result
for r in $(seq "$rounds"); do
  for f in 0 32; do
    name="randwrite 4k QD16"; [ "$f" -gt 0 ] && name="$name fsync/$f"
    for m in plain record; do printf '%-27s %-7s %s\n' "$name" "$m" "$(run $m $f)"; done
  done
done
