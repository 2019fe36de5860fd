#!/usr/bin/env bash
# Throughput of a cluster image through its owner's NBD port (local) against another node's (forwarded to the owner
# through Akka.Remote): two `q2a host --cluster` nodes on 127.0.0.1, a throwaway PostgreSQL, one 256 MiB image;
# fio's nbd engine, randread and randwrite 4k at QD16, SECONDS each, through node 1 and node 2 in turn.
# Usage: flock /tmp/q2a-cpu.lock bench/cluster-forwarding.sh [SECONDS]   (needs a Release build, postgresql, fio, qemu-img)
set -euo pipefail
secs=${1:-8}
root=$(cd "$(dirname "$0")/.." && pwd)
q2a="$root/src/Qcow2Actors.Cli/bin/Release/net10.0/q2a.dll"
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
work=$(mktemp -d /tmp/q2a-cluster-bench.XXXXXX)
chmod 777 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_pg() { if [ "$(id -u)" = 0 ]; then setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; else "$@"; fi; }
wait_for() { for _ in $(seq 1 240); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.25; done; echo "timed out waiting for '$2' in $1" >&2; tail -20 "$1" >&2; exit 1; }

as_pg "$pgbin/initdb" -D "$work/pg" -U postgres -A trust -E UTF8 --no-sync --no-instructions >/dev/null
pg=$(free_port)
as_pg "$pgbin/postgres" -D "$work/pg" -p "$pg" -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c fsync=off >"$work/pg.log" 2>&1 &
pids+=($!)
wait_for "$work/pg.log" "ready to accept connections"

mkdir -p "$work/shared/acme"
qemu-img create -q -f qcow2 "$work/shared/acme/disk.qcow2" 256M
r1=$(free_port); r2=$(free_port)
declare -A nbd
for n in 1 2; do
  r=$([ $n = 1 ] && echo $r1 || echo $r2)
  nbd[$n]=$(free_port)
  cat > "$work/node$n.conf" <<CONF
qcow2actors.host.cluster {
  port = $r
  seed-nodes = ["akka.tcp://q2a-host@127.0.0.1:$r1"]
  journal.connection-string = "Host=127.0.0.1;Port=$pg;Username=postgres;Database=postgres;Pooling=true"
}
CONF
  dotnet "$q2a" host --cluster --config "$work/node$n.conf" --data-dir "$work/shared" --control "$work/node$n.sock" --port "${nbd[$n]}" >"$work/node$n.log" 2>&1 &
  pids+=($!)
  wait_for "$work/node$n.log" "control API on"
done
wait_for "$work/node1.log" "member up akka.tcp://q2a-host@127.0.0.1:$r2"
dotnet "$q2a" ctl --control "$work/node1.sock" cluster serve acme disk >/dev/null
for _ in $(seq 1 120); do grep -q "export acme/disk added" "$work/node1.log" "$work/node2.log" && break; sleep 0.25; done
owner=$(grep -l "export acme/disk added" "$work/node1.log" "$work/node2.log" | sed 's/.*node\([12]\).log/\1/')
other=$((3 - owner))
wait_for "$work/node$other.log" "cluster image acme/disk exported on this node"
echo "owner: node$owner; forwarded through node$other; ${secs}s per run; $(nproc) cores"

# Fill the image through the owner so reads touch data, not holes.
fio --name=fill --ioengine=nbd --uri="nbd://127.0.0.1:${nbd[$owner]}/acme/disk" --rw=write --bs=1M --iodepth=4 --size=256M --output-format=terse >/dev/null

run() { # NODE RW
  fio --name="$2" --ioengine=nbd --uri="nbd://127.0.0.1:${nbd[$1]}/acme/disk" --rw="$2" --bs=4k --iodepth=16 --size=256M \
      --time_based --runtime="$secs" --output-format=json \
    | python3 -c 'import json,sys; t=sys.stdin.read(); j=json.loads(t[t.index("{"):])["jobs"][0]; d=j["read"] if j["read"]["io_bytes"] else j["write"]; print("%.0f IOPS, %.1f MiB/s, mean latency %.0f us" % (d["iops"], d["bw"]/1024, d["clat_ns"]["mean"]/1000))'
}
for rw in randread randwrite; do
  echo "$rw 4k QD16 local (node$owner, the owner):     $(run "$owner" "$rw")"
  echo "$rw 4k QD16 forwarded (node$other -> node$owner): $(run "$other" "$rw")"
done
dotnet "$q2a" ctl --control "$work/node$other.sock" cluster status >/dev/null
