#!/usr/bin/env bash
# TLS against plain NBD in the same run: one `q2a serve --tls optional` serves both, fio's nbd engine
# reads through nbd:// and nbds:// in turn (seqread 1M QD8, randread 4k QD32).
# Usage: flock /tmp/q2a-cpu.lock bench/nbd-tls.sh [SECONDS]   (needs a Release build, certtool, fio, qemu-img)
set -euo pipefail
secs=${1:-8}
root=$(cd "$(dirname "$0")/.." && pwd)
q2a="$root/src/Qcow2Actors.Cli/bin/Release/net10.0/q2a.dll"
work=$(mktemp -d /tmp/q2a-nbd-tls-bench.XXXXXX)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"

gen() { certtool --generate-privkey --key-type=rsa --sec-param=medium --outfile "$1" 2>/dev/null; }
printf 'cn = "bench CA"\nca\ncert_signing_key\nexpiration_days = 2\n' > ca.info
gen ca-key.pem
certtool --generate-self-signed --load-privkey ca-key.pem --template ca.info --outfile ca-cert.pem 2>/dev/null
mkdir -p server home/.pki/libnbd
printf 'cn = "localhost"\nip_address = "127.0.0.1"\ndns_name = "localhost"\ntls_www_server\nsigning_key\nencryption_key\nexpiration_days = 2\n' > server.info
printf 'cn = "bench-client"\ntls_www_client\nsigning_key\nencryption_key\nexpiration_days = 2\n' > client.info
gen server/server-key.pem
certtool --generate-certificate --load-privkey server/server-key.pem --load-ca-certificate ca-cert.pem --load-ca-privkey ca-key.pem --template server.info --outfile server/server-cert.pem 2>/dev/null
gen home/.pki/libnbd/client-key.pem
certtool --generate-certificate --load-privkey home/.pki/libnbd/client-key.pem --load-ca-certificate ca-cert.pem --load-ca-privkey ca-key.pem --template client.info --outfile home/.pki/libnbd/client-cert.pem 2>/dev/null
cp ca-cert.pem server/; cp ca-cert.pem home/.pki/libnbd/

# 512 MiB of data (not holes, which read as zeroes without touching the file).
head -c 512M /dev/urandom > data.raw
qemu-img convert -f raw -O qcow2 data.raw disk.qcow2
rm data.raw

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dotnet "$q2a" serve --port "$port" --tls optional --tls-creds "$work/server" --read-only disk.qcow2 > serve.out 2> serve.err &
pid=$!
for _ in $(seq 100); do grep -q Serving serve.out 2>/dev/null && break; sleep 0.2; done

# libnbd reads certificates from $HOME/.pki/libnbd (from /etc/pki/libnbd for root): run fio as nobody when root.
as=()
if [ "$(id -u)" = 0 ]; then chmod -R a+rX "$work"; as=(setpriv --reuid=65534 --regid=65534 --clear-groups); fi

run() { # scheme rw bs depth (fio's nbd engine prints a line before its JSON)
  "${as[@]}" env HOME="$work/home" fio --name=b --ioengine=nbd --uri="$1://127.0.0.1:$port/disk.qcow2" --rw="$2" --bs="$3" \
    --iodepth="$4" --size=512m --time_based --runtime="$secs" --ramp_time=1 --output-format=json 2>>"$work/fio.err" \
  | python3 -c 'import json,sys; t=sys.stdin.read(); r=json.loads(t[t.index("{"):])["jobs"][0]["read"]; print("%9.1f MiB/s %9.0f IOPS" % (r["bw_bytes"]/1048576, r["iops"]))' || { cat "$work/fio.err" >&2; exit 1; }
}
printf '%-8s %-9s %s\n' workload transport result
for w in "read 1M 8 seqread" "randread 4k 32 randread"; do
  set -- $w
  for s in nbd nbds; do printf '%-8s %-9s %s\n' "$4" "$([ $s = nbds ] && echo TLS || echo plain)" "$(run $s "$1" "$2" "$3")"; done
done
