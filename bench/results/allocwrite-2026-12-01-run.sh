#!/bin/bash
# usage: run.sh DLLDIR TAG [perf]
# one allocwrite job against q2a serve from DLLDIR; prints IOPS, CPU us/IO, ctx switches/IO
set -u
DLL=$1/q2a.dll; TAG=$2; PERF=${3:-}
W=/work/tmp/alloc; IMG=$W/$TAG.qcow2; LOG=$W/$TAG.log
[ -f $W/iolog ] || python3 -c "
import sys; sys.path.insert(0,'/work/wt/alloc/bench'); import importlib.util
spec=importlib.util.spec_from_file_location('r','/work/wt/alloc/bench/nbd-race.py'); m=importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
from pathlib import Path; m.write_iolog(Path('$W/iolog'), 4<<30)"
rm -f $IMG; qemu-img create -q -f qcow2 -o cluster_size=65536 $IMG ${SIZE:-4G}
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
if [ -n "$PERF" ]; then export DOTNET_PerfMapEnabled=1 DOTNET_EnableWriteXorExecute=0 DOTNET_ReadyToRun=0; fi
setsid dotnet $DLL serve --port $PORT ${Q2A_EXTRA:-} $IMG > $LOG 2>&1 &
SPID=$!
for i in $(seq 1 300); do nbdinfo --size nbd://127.0.0.1:$PORT >/dev/null 2>&1 && break; sleep 0.2; done
cpu() { awk '{print $14+$15}' /proc/$SPID/stat; }
ctx() { cat /proc/$SPID/task/*/status 2>/dev/null | awk '/ctxt_switches/{s+=$2} END{print s}'; }
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null
C0=$(cpu); X0=$(ctx)
for t in /proc/$SPID/task/*; do echo "$(basename $t) $(cat $t/comm | tr " " _) $(sed 's/.*) //' $t/stat | awk '{print $12+$13}')"; done > $W/$TAG.t0
if [ -n "$PERF" ]; then perf record -F 4999 -g -p $SPID -o $W/$TAG.perf.data 2>/dev/null & PP=$!; sleep 0.5; fi
fio --name=allocwrite --ioengine=nbd --uri=nbd://127.0.0.1:$PORT --numjobs=1 --randrepeat=1 --output-format=json --read_iolog=$W/${IOLOG:-iolog} --iodepth=16 --runtime=30 --end_fsync=1 > $W/$TAG.fio.json
C1=$(cpu); X1=$(ctx)
for t in /proc/$SPID/task/*; do echo "$(basename $t) $(cat $t/comm | tr " " _) $(sed 's/.*) //' $t/stat | awk '{print $12+$13}') $(awk '/^voluntary_ctxt/{v=$2}/nonvoluntary/{n=$2}END{print v, n}' $t/status)"; done > $W/$TAG.t1
if [ -n "$PERF" ]; then kill -INT $PP; wait $PP; fi
kill -TERM -- -$SPID; wait $SPID 2>/dev/null
python3 - <<PY
import json
s=open('$W/$TAG.fio.json').read();j=json.loads(s[s.index('{'):]);w=j['jobs'][0]['write'];n=w['total_ios']
print(f"$TAG iops={w['iops']:.0f} ios={n} cpu_us/io={($C1-$C0)*1e4/n:.1f} ctxsw/io={($X1-$X0)/n:.2f}")
PY
qemu-img check -q $IMG && echo check-ok; rm -f $IMG
