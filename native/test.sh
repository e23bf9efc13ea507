#!/bin/bash
# Smoke tests for native/build/memtwin-native (must run as root on a real kernel).
# Usage: native/test.sh        (builds first)
set -u
cd "$(dirname "$0")"
make -s || exit 1
BIN=./build/memtwin-native
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
FAIL=0
THP=/sys/kernel/mm/transparent_hugepage/enabled
HP2=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages

# check <name> <output file> <python expression over r (dict i -> result), lines (list)>
check() {
	local name=$1 out=$2 expr=$3
	if python3 - "$out" "$expr" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
r = {d["i"]: d for d in lines if "i" in d}
ok = eval(sys.argv[2])
sys.exit(0 if ok else 1)
PY
	then echo "ok   $name"; else echo "FAIL $name"; echo "     expr: $expr"; FAIL=1; fi
}

# ---------------------------------------------------------------- basic ops
cat > "$TMP/basic.in" <<'IN'
info i=0 in=0 thread=0
mmap i=1 in=0 thread=0 h=1 len=4096 prot=3 flags=34 addr=0 align=0
mmap i=2 in=0 thread=0 h=2 len=4096 prot=3 flags=34 addr=0 align=0
smaps i=3 in=0 thread=0 addr=A2+0
sysfs i=4 in=0 path=/sys/kernel/mm/transparent_hugepage/enabled value=madvise
mmap i=5 in=0 h=3 len=4194304 prot=3 flags=34 addr=0 align=2097152
madvise i=6 in=0 addr=A3+0 len=4194304 advice=14
touch i=7 in=0 addr=A3+0 len=4194304 write=1 stride=4096 fill=7
pagemap i=8 in=0 addr=A3+0 len=4194304
mmap i=9 in=0 h=4 len=1048576 prot=3 flags=34 addr=0 align=0
touch i=10 in=0 addr=A4+0 len=65536 write=0 stride=4096
pagemap i=11 in=0 addr=A4+0 len=65536
munmap i=12 in=0 addr=A4+1 len=4096
mmap i=13 in=0 h=5 len=4096 prot=3 flags=1048610 addr=A4+0 align=0
mmap i=14 in=0 h=6 len=8192 prot=0 flags=34 addr=0 align=0
touch i=15 in=0 addr=A6+0 len=8192 write=1 fill=1
peek i=16 in=0 addr=A3+0 len=8192
pagemap i=17 in=0 addr=A4+65536 len=8192
smaps i=18 in=0 addr=R4096
move_pages i=19 in=0 pages=A3+0,A4+0,A6+0 nodes=null flags=0
IN
$BIN < "$TMP/basic.in" > "$TMP/basic.out" 2> "$TMP/basic.err"
echo "basic rc=$?"
check "layout: first script mmap directly below fence" "$TMP/basic.out" 'r[1]["addr"] + 4096 == r[0]["fence"]'
check "adjacent anonymous mmaps merge (smaps Size 8)" "$TMP/basic.out" 'r[3]["Size"] == 8 and r[3]["VmFlags"] == ["rd","wr","mr","mw","me","ac"]'
check "THP 4M aligned+MADV_HUGEPAGE written -> 1024 pages 2M" "$TMP/basic.out" \
	'r[5]["addr"] % 2097152 == 0 and r[8]["pages"] == [{"n":1024,"present":True,"node":0,"size":"2M"}]'
check "read-touch fresh anon -> present, node null (zero page)" "$TMP/basic.out" \
	'r[11]["pages"] == [{"n":16,"present":True,"node":None,"size":"4K"}]'
check "munmap unaligned -> EINVAL" "$TMP/basic.out" 'r[12]["ret"] == -1 and r[12]["errno"] == "EINVAL"'
check "MAP_FIXED_NOREPLACE over mapping -> EEXIST" "$TMP/basic.out" 'r[13]["ret"] == -1 and r[13]["errno"] == "EEXIST"'
check "touch PROT_NONE -> SIGSEGV at start" "$TMP/basic.out" 'r[15]["ret"] == -1 and r[15]["signal"] == "SIGSEGV" and r[15]["at"] == r[14]["addr"]'
check "peek run-length" "$TMP/basic.out" 'r[16]["bytes"] == [[7,2]]'
check "pagemap untouched -> not present" "$TMP/basic.out" 'r[17]["pages"] == [{"n":2,"present":False,"node":None,"size":None}]'
check "smaps no VMA -> ENOENT" "$TMP/basic.out" 'r[18]["errno"] == "ENOENT"'
check "move_pages status strings" "$TMP/basic.out" 'r[19]["status"] == [0,"-EFAULT","-ENOENT"]'
check "summary" "$TMP/basic.out" 'lines[-1]["summary"]["ops"] == 20 and lines[-1]["summary"]["errors"] == 4'

# ---------------------------------------------------------------- hugetlb pool
orig_hp=$(cat $HP2)
cat > "$TMP/huge.in" <<'IN'
hugetlb_pool i=0 in=0 size=2097152 nr=4
mmap i=1 in=0 h=1 len=4194304 prot=3 flags=262178 addr=0 align=0
touch i=2 in=0 addr=A1+0 len=4194304 write=1 fill=2
pagemap i=3 in=0 addr=A1+0 len=4194304
smaps i=4 in=0 addr=A1+0
meminfo i=5 in=0
IN
$BIN < "$TMP/huge.in" > "$TMP/huge.out"
check "hugetlb pool of 4 obtained" "$TMP/huge.out" 'r[0]["nr"] == 4'
check "MAP_HUGETLB mapping works" "$TMP/huge.out" \
	'r[1]["ret"] == 0 and r[2]["ret"] == 0 and r[3]["pages"] == [{"n":1024,"present":True,"node":0,"size":"2M"}]'
check "hugetlb smaps" "$TMP/huge.out" 'r[4]["KernelPageSize"] == 2048 and "ht" in r[4]["VmFlags"] and r[4]["Private_Hugetlb"] == 4096'
check "meminfo" "$TMP/huge.out" 'r[5]["hugepages"]["2M"]["nr"] == 4 and r[5]["hugepages"]["2M"]["free"] == 2'
now_hp=$(cat $HP2)
if [ "$now_hp" = "$orig_hp" ]; then echo "ok   hugetlb pool restored ($orig_hp)"; else echo "FAIL hugetlb pool not restored: $now_hp != $orig_hp"; FAIL=1; fi

# ---------------------------------------------------------------- spawn / process_madvise / threads
cat > "$TMP/spawn.in" <<'IN'
spawn i=0 in=0 name=child
info i=1 in=1
mmap i=2 in=1 h=1 len=4194304 prot=3 flags=34 addr=0 align=2097152
sysfs i=3 in=0 path=/sys/kernel/mm/transparent_hugepage/enabled value=madvise
madvise i=4 in=1 addr=A1+0 len=4194304 advice=15
touch i=5 in=1 addr=A1+0 len=4194304 write=1 fill=5
pagemap i=6 in=1 addr=A1+0 len=4194304
process_madvise i=7 in=0 target=1 iov=A1+0:2097152 advice=25 flags=0
madvise i=8 in=1 addr=A1+0 len=4194304 advice=14
process_madvise i=9 in=0 target=1 iov=A1+0:2097152 advice=25 flags=0
pagemap i=10 in=1 addr=A1+0 len=4194304
thread i=11 in=1 cpu=0
mmap i=12 in=1 thread=1 h=2 len=65536 prot=3 flags=34 addr=0 align=0
touch i=13 in=1 thread=1 addr=A2+0 len=65536 write=1 fill=3 async=1
join i=14 in=1 thread=1 timeout_ms=5000
peek i=15 in=1 thread=1 addr=A2+0 len=65536
touch i=16 in=1 thread=1 addr=R4096 len=1 write=0 async=1
join i=17 in=1 thread=1
IN
$BIN < "$TMP/spawn.in" > "$TMP/spawn.out"
check "spawn gives a fresh process" "$TMP/spawn.out" 'r[0]["pid"] == r[1]["pid"]'
check "child pages are 4K after touch with MADV_NOHUGEPAGE" "$TMP/spawn.out" 'r[6]["pages"] == [{"n":1024,"present":True,"node":0,"size":"4K"}]'
check "MADV_COLLAPSE on a VM_NOHUGEPAGE VMA -> EINVAL" "$TMP/spawn.out" 'r[7]["ret"] == -1 and r[7]["errno"] == "EINVAL"'
check "process_madvise MADV_COLLAPSE on child returns bytes" "$TMP/spawn.out" 'r[9]["ret"] == 2097152'
# The second 2M may have been collapsed by khugepaged too (MADV_HUGEPAGE at i=8; about 1 run in 8 here).
check "collapsed range is 2M" "$TMP/spawn.out" 'r[10]["pages"] in ([{"n":512,"present":True,"node":0,"size":"2M"},{"n":512,"present":True,"node":0,"size":"4K"}], [{"n":1024,"present":True,"node":0,"size":"2M"}])'
check "thread + async touch + join" "$TMP/spawn.out" 'r[13] == {"i":13,"ret":0} and r[14]["ret"] == 0 and r[15]["bytes"] == [[3,16]]'
check "async fault recorded" "$TMP/spawn.out" 'r[17]["async_faults"][0]["signal"] == "SIGSEGV" and r[17]["async_faults"][0]["at"] == 4096'

# ---------------------------------------------------------------- knob restore on SIGKILL / SIGTERM
K=/sys/kernel/mm/transparent_hugepage/khugepaged/alloc_sleep_millisecs
S=/sys/kernel/mm/transparent_hugepage/shmem_enabled
origK=$(cat $K); origS=$(cat $S)
newK=$((origK + 1))
case "$origS" in *"[never]"*) newS=advise;; *) newS=never;; esac
for sig in KILL TERM; do
	( echo "sysfs i=0 in=0 path=$K value=$newK"; echo "sysfs i=1 in=0 path=$S value=$newS"; echo "spawn i=2 in=0 name=a"; sleep 5; echo "info i=3 in=0" ) \
		| $BIN > "$TMP/kill.out" &
	G=$!
	sleep 1
	W=$(pgrep -P $G)
	changed=$(cat $K)
	if [ $sig = KILL ]; then kill -KILL $W; else kill -TERM $G; fi
	wait $G 2>/dev/null
	rc=$?
	if [ "$changed" = "$newK" ] && [ "$(cat $K)" = "$origK" ] && [ "$(cat $S)" = "$origS" ] && [ $rc = 137 ]; then
		echo "ok   knobs restored after SIG$sig (rc=$rc)"
	else
		echo "FAIL knobs after SIG$sig: changed=$changed now=$(cat $K) / $(cat $S) rc=$rc"; FAIL=1
	fi
	wait
done
if pgrep -f 'memtwin-native --child' >/dev/null; then echo "FAIL leftover child processes"; FAIL=1; else echo "ok   no leftover children"; fi

# ---------------------------------------------------------------- the guardian itself killed: its journal
# SIGKILL to the guardian leaves the knob and the pool changed, and the journal on disk; then
# `--restore` (first round) or the next executor's start (second round) undoes them and removes it.
P=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
JDIR=${MEMTWIN_JOURNAL_DIR:-/var/lib/memtwin/journal}
origP=$(cat $P)
for who in restore next; do
	( echo "sysfs i=0 in=0 path=$K value=$newK"; echo "hugetlb_pool i=1 in=0 size=2097152 nr=$((origP + 2))"
	  echo "spawn i=2 in=0 name=a"; sleep 5 ) | $BIN > "$TMP/gk.out" &
	G=$!
	sleep 1
	kill -KILL $G
	wait $G 2>/dev/null
	J=$(ls "$JDIR"/*-$G-*.journal 2>/dev/null)
	left="$(cat $K) $(cat $P)"
	if [ $who = restore ]; then
		$BIN --restore > "$TMP/restore.out"; rc=$?
	else
		echo "info i=0 in=0" | $BIN > /dev/null 2> "$TMP/restore.out"; rc=$?
	fi
	if [ "$left" = "$newK $((origP + 2))" ] && [ -n "$J" ] && [ ! -e "$J" ] && [ $rc = 0 ] &&
		[ "$(cat $K)" = "$origK" ] && [ "$(cat $P)" = "$origP" ] && grep -q "$K: $newK -> $origK" "$TMP/restore.out"; then
		echo "ok   guardian SIGKILL: journal replayed by the $who"
	else
		echo "FAIL guardian SIGKILL ($who): left '$left' journal '$J' rc=$rc now $(cat $K) $(cat $P)"; cat "$TMP/restore.out"; FAIL=1
	fi
	wait
done
$BIN --restore > "$TMP/restore.out"
if [ "$(cat "$TMP/restore.out")" = "nothing to restore" ]; then echo "ok   --restore: nothing to restore"; else echo "FAIL --restore twice: $(cat "$TMP/restore.out")"; FAIL=1; fi

# ---------------------------------------------------------------- a child that dropped root still dies with the worker
# setresuid clears the parent-death signal (commit_creds); `setuid` re-arms it. The child is stopped, so it
# cannot see EOF on its pipe: only SIGKILL from the worker's death ends it.
( echo "spawn i=0 in=0 name=u"; echo "setuid i=1 in=1 uid=65534 gid=65534"; echo "pagemap i=2 in=1 addr=R4096 len=4096"; sleep 5 ) \
	| $BIN > "$TMP/uid.out" &
G=$!
sleep 1
W=$(pgrep -P $G)
C=$(pgrep -P "$W")
kill -STOP "$C"
kill -KILL "$W"
sleep 0.5
if kill -0 "$C" 2>/dev/null; then
	echo "FAIL unprivileged child survived the worker"; FAIL=1; kill -KILL "$C"
else
	echo "ok   unprivileged child died with the worker"
fi
wait $G 2>/dev/null
wait
check "setuid in a child, pagemap still readable" "$TMP/uid.out" 'r[1]["ret"] == 0 and r[2]["ret"] == 0'

# ---------------------------------------------------------------- userfaultfd
# flags=526336 = O_CLOEXEC|O_NONBLOCK; mode=1 MISSING; mode 1 on copy = DONTWAKE.
# A thread blocks on a missing page until UFFDIO_WAKE; the script ends with a
# thread still blocked (in the worker and in a child): the executor must exit cleanly.
cat > "$TMP/uffd.in" <<'IN'
userfaultfd i=0 in=0 fd=0 flags=526336
uffd_read i=1 in=0 fd=0 max=1 timeout_ms=10
uffdio_api i=2 in=0 fd=0 features=16
uffdio_api i=3 in=0 fd=0 features=0
mmap i=4 in=0 h=1 len=4194304 prot=3 flags=34 addr=0 align=2097152
uffdio_register i=5 in=0 fd=0 addr=A1+0 len=2097152 mode=1
thread i=6 in=0 cpu=-1
touch i=7 in=0 thread=1 addr=A1+4096 len=1 write=1 fill=9 async=1
join i=8 in=0 thread=1 timeout_ms=100
uffd_read i=9 in=0 fd=0 max=2 timeout_ms=200
uffdio_copy i=10 in=0 fd=0 dst=A1+4096 len=4096 fill=7 mode=1
join i=11 in=0 thread=1 timeout_ms=100
uffdio_wake i=12 in=0 fd=0 addr=A1+4096 len=4096
join i=13 in=0 thread=1 timeout_ms=5000
peek i=14 in=0 addr=A1+4096 len=4096
uffdio_copy i=15 in=0 fd=0 dst=A1+4096 len=4096 fill=7 mode=0
uffdio_copy i=16 in=0 fd=0 dst=A1+4097 len=4096 fill=7 mode=0
uffdio_copy i=17 in=0 fd=0 dst=A1+2097152 len=4096 fill=7 mode=0
uffdio_zeropage i=18 in=0 fd=0 addr=A1+8192 len=4096 mode=0
uffdio_copy i=19 in=0 fd=1 dst=A1+0 len=4096 fill=7 mode=0
uffdio_unregister i=20 in=0 fd=0 addr=A1+0 len=2097152
uffdio_register i=21 in=0 fd=0 addr=A1+0 len=2097152 mode=1
touch i=22 in=0 thread=1 addr=A1+65536 len=1 write=0 async=1
uffd_read i=23 in=0 fd=0 max=1 timeout_ms=1000
spawn i=24 in=0 name=c
userfaultfd i=25 in=1 fd=1 flags=0
uffdio_api i=26 in=1 fd=1 features=0
mmap i=27 in=1 h=2 len=2097152 prot=3 flags=34 addr=0 align=2097152
uffdio_register i=28 in=1 fd=1 addr=A2+0 len=2097152 mode=1
thread i=29 in=1 cpu=-1
touch i=30 in=1 thread=1 addr=A2+8192 len=1 write=0 async=1
uffd_read i=31 in=1 fd=1 max=1 timeout_ms=1000
uffd_read i=32 in=0 fd=0 max=1 timeout_ms=10
IN
start=$(date +%s)
timeout 60 $BIN < "$TMP/uffd.in" > "$TMP/uffd.out" 2> "$TMP/uffd.err"
rc=$?
el=$(( $(date +%s) - start ))
check "uffd: read/ioctl before UFFDIO_API -> EINVAL; second UFFDIO_API -> EINVAL" "$TMP/uffd.out" \
	'r[1]["errno"] == "EINVAL" and r[2]["ret"] == 0 and "UFFD_FEATURE_MISSING_HUGETLBFS" in r[2]["features"] and r[2]["ioctls"] == ["UFFDIO_REGISTER","UFFDIO_UNREGISTER","UFFDIO_API"] and r[3]["errno"] == "EINVAL"'
check "uffd: register MISSING on anon -> range ioctls" "$TMP/uffd.out" \
	'r[5]["ret"] == 0 and {"UFFDIO_WAKE","UFFDIO_COPY","UFFDIO_ZEROPAGE"} <= set(r[5]["ioctls"])'
check "uffd: blocked thread, fault message, copy DONTWAKE, wake, join" "$TMP/uffd.out" \
	'r[8]["errno"] == "ETIMEDOUT" and r[9]["msgs"] == [{"event":"UFFD_EVENT_PAGEFAULT","address":r[4]["addr"]+4096,"flags":["UFFD_PAGEFAULT_FLAG_WRITE"]}] and r[10]["copy"] == 4096 and r[11]["errno"] == "ETIMEDOUT" and r[13]["ret"] == 0 and r[14]["bytes"] == [[9,1]]'
check "uffd: copy EEXIST (-17), misaligned EINVAL (null), unregistered ENOENT (-2)" "$TMP/uffd.out" \
	'r[15]["errno"] == "EEXIST" and r[15]["copy"] == -17 and r[16]["errno"] == "EINVAL" and r[16]["copy"] is None and r[17]["errno"] == "ENOENT" and r[17]["copy"] == -2'
check "uffd: zeropage; unknown fd index -> EBADF; unregister/register" "$TMP/uffd.out" \
	'r[18]["zeropage"] == 4096 and r[19]["errno"] == "EBADF" and r[20]["ret"] == 0 and r[21]["ret"] == 0'
check "uffd: in a spawned child (no fork event in the worker)" "$TMP/uffd.out" \
	'r[23]["msgs"][0]["address"] == r[4]["addr"]+65536 and r[31]["msgs"][0]["address"] == r[27]["addr"]+8192 and r[32]["msgs"] == []'
if [ $rc = 0 ] && [ $el -lt 10 ] && grep -q '"summary"' "$TMP/uffd.out"; then
	echo "ok   uffd: executor exits cleanly with threads blocked on userfaults (${el}s)"
else
	echo "FAIL uffd: exit rc=$rc after ${el}s"; FAIL=1
fi

# ---------------------------------------------------------------- memory pressure: swap, cgroups, OOM kills
SWAPDIR=$TMP/swap
cat > "$TMP/pressure.in" <<'IN'
swap i=0 in=0 size=67108864
mmap i=1 in=0 h=1 len=4194304 prot=3 flags=34 addr=0 align=0
touch i=2 in=0 addr=A1+0 len=4194304 write=1 stride=4096 fill=7
madvise i=3 in=0 addr=A1+0 len=2097152 advice=21
pagemap i=4 in=0 addr=A1+0 len=4194304
peek i=5 in=0 addr=A1+0 len=4194304
pagemap i=6 in=0 addr=A1+0 len=4194304
swap i=7 in=0 size=4096
spawn i=8 in=0 name=c
cgroup i=9 in=0 cg=0 name=g memory_max=16777216 swap_max=0
cgroup_enter i=10 in=1 cg=0
mmap i=11 in=1 h=2 len=67108864 prot=3 flags=34 addr=0 align=0
touch i=12 in=1 addr=A2+0 len=67108864 write=1 stride=4096 fill=7
touch i=13 in=1 addr=A2+0 len=4096 write=1
cgroup_stat i=14 in=0 cg=0
spawn i=15 in=0 name=d
migrate_pages i=16 in=2 target=1 old_nodes=0 new_nodes=0
cgroup_enter i=17 in=1 cg=0
read i=18 in=0 path=/proc/swaps
IN
MEMTWIN_SWAP_DIR=$SWAPDIR $BIN < "$TMP/pressure.in" > "$TMP/pressure.out" 2> "$TMP/pressure.err"
check "swap: MADV_PAGEOUT -> pagemap swapped; peek reads the contents back in" "$TMP/pressure.out" \
	'r[0]["ret"] == 0 and r[4]["pages"] == [{"n":512,"present":False,"node":None,"size":None,"swapped":True},{"n":512,"present":True,"node":0,"size":"4K"}] and r[5]["bytes"] == [[7,1024]] and "swapped" not in str(r[6]["pages"])'
check "swap: a size below two pages -> EINVAL; the area is listed in /proc/swaps" "$TMP/pressure.out" \
	'r[7]["errno"] == "EINVAL" and "memtwin/swap" not in r[18]["text"] and "/swap/" in r[18]["text"]'
check "OOM kill: the touch -> signal SIGKILL, later ops killed, oom 1 oom_kill 1" "$TMP/pressure.out" \
	'r[12] == {"i":12,"ret":-1,"signal":"SIGKILL","ns":0} and r[13]["killed"] == "SIGKILL" and r[14]["events"] == {"oom":1,"oom_kill":1} and r[16]["errno"] == "ESRCH" and r[17]["killed"] == "SIGKILL"'
if [ -z "$(ls -A "$SWAPDIR" 2>/dev/null)" ] && ! grep -q "$SWAPDIR" /proc/swaps && [ -z "$(find /sys/fs/cgroup -maxdepth 5 -type d -name 'memtwin-*' 2>/dev/null)" ]; then
	echo "ok   swap file and cgroups gone after the run"
else
	echo "FAIL swap file or cgroup left"; FAIL=1
fi

# ---------------------------------------------------------------- invalid line
echo "mmap i=7 in=0 len=zz" | $BIN > "$TMP/inv.out"
rc=$?
if [ $rc = 2 ] && grep -q '"invalid"' "$TMP/inv.out"; then echo "ok   invalid line -> exit 2"; else echo "FAIL invalid line rc=$rc"; FAIL=1; fi

[ $FAIL = 0 ] && echo "ALL TESTS PASSED" || echo "SOME TESTS FAILED"
exit $FAIL
