#!/usr/bin/env python3
"""Scale run of the real daemon: `q2a host` with N images of one tenant, created through the control API.

Measures: the restart with N images to reopen (time until /v1/health reports them open), the daemon's
RSS idle and after writing K images at random over NBD (qemu-io), and the per-image cost; then
SIGTERM (exit code) and `qemu-img check` of every image. Bounded: N, K and the writes are fixed.

  bench/host-images.py [--images 500] [--written 50] [--writes 200] [--q2a PATH] [--out FILE]
"""
import argparse, http.client, json, os, random, signal, socket, subprocess, sys, tempfile, time

class UnixHttp(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=120)
        self.path = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)

def call(sock, method, route, body=None):
    c = UnixHttp(sock)
    c.request(method, route, body=json.dumps(body) if body is not None else None,
              headers={"content-type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    if r.status >= 300:
        raise SystemExit(f"{method} {route}: {r.status} {data.decode()}")
    return json.loads(data) if data else None

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def start(q2a, data, sock, port):
    p = subprocess.Popen([q2a, "host", "--data-dir", data, "--control", sock, "--port", str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        if p.poll() is not None:
            raise SystemExit(f"q2a host exited {p.returncode}: {p.stderr.read().decode()[-2000:]}")
        if os.path.exists(sock):
            try:
                return p, call(sock, "GET", "/v1/health")
            except (ConnectionError, FileNotFoundError, OSError):
                pass
        time.sleep(0.02)
    p.kill(); raise SystemExit("q2a host did not answer within 120 s")

def stop(p):
    p.send_signal(signal.SIGTERM)
    return p.wait(timeout=300)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--written", type=int, default=50)
    ap.add_argument("--writes", type=int, default=200)
    ap.add_argument("--q2a", default="src/Qcow2Actors.Cli/bin/Release/net10.0/linux-x64/q2a")
    ap.add_argument("--out")
    a = ap.parse_args()
    out = []
    def say(s):
        print(s, flush=True); out.append(s)
    with tempfile.TemporaryDirectory(prefix="q2a-host-bench-") as tmp:
        data, sock, port = os.path.join(tmp, "data"), os.path.join(tmp, "control.sock"), free_port()
        os.mkdir(data)
        p, _ = start(a.q2a, data, sock, port)
        say(f"q2a host: {a.images} images of 1 GiB (4 KiB clusters), tenant 'bench'; {a.written} written at random over NBD, {a.writes} 4 KiB writes each")
        say(f"fresh daemon RSS: {rss_kib(p.pid)/1024:.1f} MiB")
        call(sock, "POST", "/v1/tenants", {"name": "bench"})
        t = time.time()
        for i in range(a.images):
            call(sock, "POST", "/v1/tenants/bench/images", {"name": f"d{i}", "size": 1 << 30, "options": "cluster_size=4k"})
        say(f"created {a.images} images through the API in {time.time()-t:.1f} s")
        rc = stop(p); say(f"first stop: exit {rc}")
        t = time.time()
        p, health = start(a.q2a, data, sock, port)
        while health.get("openImages", 0) < a.images and time.time() - t < 120:
            time.sleep(0.02); health = call(sock, "GET", "/v1/health")
        up = time.time() - t
        idle = rss_kib(p.pid)
        say(f"restart: {health.get('openImages')} images open, health '{health.get('status')}' after {up:.2f} s ({up*1000/a.images:.2f} ms per image)")
        say(f"RSS with {a.images} images open and idle: {idle/1024:.1f} MiB")
        rng = random.Random(1)
        chosen = rng.sample(range(a.images), a.written)
        t = time.time()
        for i in chosen:
            call(sock, "POST", "/v1/exports", {"tenant": "bench", "image": f"d{i}"})
            cmds = []
            for _ in range(a.writes):
                cmds += ["-c", f"write -P {i % 250 + 1} {rng.randrange(0, 1 << 30, 4096)} 4k"]
            r = subprocess.run(["qemu-io", "-f", "raw", *cmds, f"nbd://127.0.0.1:{port}/bench/d{i}"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"qemu-io on d{i} failed: {r.stderr[-500:]}")
        say(f"writes: {a.written * a.writes} random 4 KiB writes to {a.written} images in {time.time()-t:.1f} s (qemu-io per image)")
        busy = rss_kib(p.pid)
        with open(f"/proc/{p.pid}/status") as f:
            hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
        say(f"RSS after the writes: {busy/1024:.1f} MiB (peak {hwm/1024:.1f} MiB); per written image beyond idle: {(busy-idle)/a.written/1024:.2f} MiB")
        t = time.time(); rc = stop(p)
        say(f"SIGTERM: exit {rc} after {time.time()-t:.2f} s")
        bad = 0
        for i in range(a.images):
            r = subprocess.run(["qemu-img", "check", os.path.join(data, "bench", f"d{i}.qcow2")], capture_output=True)
            bad += r.returncode != 0
        say(f"qemu-img check: {a.images - bad}/{a.images} clean")
    if a.out:
        with open(a.out, "w") as f:
            f.write("# bench/host-images.py " + " ".join(sys.argv[1:]) + "\n" + "\n".join(out) + "\n")
    return 1 if bad or rc else 0

if __name__ == "__main__":
    sys.exit(main())
