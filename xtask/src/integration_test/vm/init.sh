#!/bin/sh
# /init of the VM initramfs built by `cargo xtask integration-test vm` (xtask/src/vm/).
# busybox sh; everything it reports for the xtask is a line starting with COPILOT-VM-.
# /etc/copilot-vm.env (written by the xtask) sets COPILOT_BIN, TRACER, FIXTURES,
# HELPERS_DIR and the test filters.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
say() { echo "COPILOT-VM-$*"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

if [ "$1" != stage2 ]; then
	mount -t proc proc /proc
	say "BOOTED $(uname -r) $(uptime_s)"
	# runc pivot_root(2)s into every container, and pivot_root fails with EINVAL while
	# the caller's root is the initramfs ("rootfs"). Move everything to a tmpfs and
	# switch_root into it (switch_root frees the initramfs as it goes).
	mkdir -p /newroot
	mount -t tmpfs -o mode=755 tmpfs /newroot
	for f in /*; do
		case "$f" in /newroot | /proc | /sys | /dev) ;; *) cp -a "$f" /newroot/ ;; esac
	done
	mkdir -p /newroot/proc /newroot/sys /newroot/dev
	umount /proc
	exec switch_root /newroot /init stage2
	say "RESULT: fail switch_root failed"
	poweroff -f
fi

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
. /etc/copilot-vm.env
# A tmpfs over /tmp would hide a workspace that lives under /tmp (the test executables
# sit at their host paths); the root is a tmpfs already, so /tmp is writable either way.
case "$COPILOT_BIN" in
/tmp/*) chmod 1777 /tmp ;;
*) mount -t tmpfs -o mode=1777 tmpfs /tmp ;;
esac
mount -t tmpfs tmpfs /run
mount -t bpf bpf /sys/fs/bpf
# Pure cgroup v2 at /sys/fs/cgroup, as on most production nodes (and what runc checks
# to choose its v2 driver); the fixtures find it in /proc/self/mountinfo.
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
hostname copilot-vm
export COPILOT_BIN CI=true RUST_BACKTRACE=1 HOME=/root TMPDIR=/tmp
say "STAGE2 $(uptime_s)"

failed=""
# run_step NAME COMMAND…: runs it, reports pass/fail and how long it took.
run_step() {
	name=$1
	shift
	start=$(uptime_s)
	say "STEP-BEGIN $name"
	"$@"
	rc=$?
	if [ $rc = 0 ]; then res=pass; else res=fail; failed="$failed $name"; fi
	say "STEP $name $res rc=$rc start=$start end=$(uptime_s)"
}

# The pods of these steps: copilot follows pod cgroups at level 2 or deeper (a kubelet's
# are at 2 or 3), so they go one level below the root. The probe delegates the memory
# controller to it, once the cgroup v1 memory test is done (a controller enabled on v2
# can no longer be mounted on v1).
PODS=/sys/fs/cgroup/copilot-vm
mkdir -p $PODS

# clear_error NAME PATTERN: `copilot trace` on a pod cgroup must fail at once with an
# error matching PATTERN: exit status 1..123 (124 is busybox timeout's, > 128 a signal,
# i.e. a crash), no `ready` line, no panic.
clear_error() {
	label=$1
	pattern=$2
	pod=$PODS/missing
	mkdir -p $pod
	timeout 60 "$COPILOT_BIN" trace --pod-cgroup $pod >/tmp/missing.out 2>/tmp/missing.err
	rc=$?
	rmdir $pod
	sed "s/^/COPILOT-VM-ERROR-$label /" /tmp/missing.err
	[ $rc -ne 0 ] && [ $rc -lt 124 ] && grep -q "$pattern" /tmp/missing.err &&
		! grep -q panicked /tmp/missing.err && ! grep -q '"ready"' /tmp/missing.out
}

# 0. What copilot says on a kernel without what it needs, simulated on this one: no
#    BTF (an empty file bind-mounted over /sys/kernel/btf/vmlinux). tracefs is not
#    needed (raw tracepoints, attached by name) and stays unmounted until the suites
#    and probes are done, so all of them run without it.
no_tracefs() {
	! grep -q ' tracefs ' /proc/mounts
}
run_step tracefs-not-mounted no_tracefs
no_btf() {
	: >/tmp/empty-btf
	mount --bind /tmp/empty-btf /sys/kernel/btf/vmlinux || return 2
	clear_error no-btf 'BTF'
	rc=$?
	umount /sys/kernel/btf/vmlinux
	return $rc
}
run_step copilot-no-btf no_btf

# 1. Bad input on a cgroup v1 hierarchy. The tracer suite's own test wants a v1 *memory*
#    hierarchy: mount one while no v2 cgroup uses the memory controller yet (a controller
#    lives in one hierarchy at a time), run that test, unmount. Debian's 6.12 is built
#    without CONFIG_MEMCG_V1, so there the mount fails and the test cannot run.
mkdir -p /run/cgroup-v1/memory /run/cgroup-v1/named
if mount -t cgroup -o memory cgroup /run/cgroup-v1/memory 2>/tmp/v1-memory.err; then
	run_step tracer-v1 "$TRACER" --test-threads=1 --nocapture --exact bad_input_pod_cgroup_in_a_cgroup_v1_hierarchy
	# A v1 hierarchy is destroyed at unmount only if it has no child cgroup left, dying
	# ones included (a removed memcg lingers until its last charge and RCU callback are
	# gone); otherwise it stays, unmounted, and keeps the memory controller from v2 for
	# good. So wait until /proc/cgroups counts the root alone, then unmount, then wait
	# for memory to show up in v2 (the root is freed asynchronously).
	i=0
	while [ "$(awk '$1 == "memory" { print $3 }' /proc/cgroups)" != 1 ] && [ $i -lt 300 ]; do
		echo 3 >/proc/sys/vm/drop_caches
		sleep 0.1
		i=$((i + 1))
	done
	umount /run/cgroup-v1/memory
	i=0
	while ! grep -qw memory /sys/fs/cgroup/cgroup.controllers && [ $i -lt 300 ]; do
		sleep 0.1
		i=$((i + 1))
	done
else
	say "STEP tracer-v1 skip no cgroup v1 memory controller: $(cat /tmp/v1-memory.err)"
fi
# Every kernel: copilot on a cgroup in a named v1 hierarchy (no controllers) must exit
# non-zero with an error naming the path, never crash or hang.
v1_bad_input() {
	mount -t cgroup -o none,name=copilot-vm cgroup /run/cgroup-v1/named || return 2
	mkdir -p /run/cgroup-v1/named/pod
	timeout 60 "$COPILOT_BIN" trace --pod-cgroup /run/cgroup-v1/named/pod >/tmp/v1.out 2>/tmp/v1.err
	rc=$?
	rmdir /run/cgroup-v1/named/pod
	umount /run/cgroup-v1/named
	sed 's/^/COPILOT-VM-ERROR-v1 /' /tmp/v1.err
	# 124 is busybox timeout's "killed"; > 128 a signal (a crash).
	[ $rc -ne 0 ] && [ $rc -lt 124 ] && grep -q /run/cgroup-v1/named/pod /tmp/v1.err &&
		! grep -q '"ready"' /tmp/v1.out
}
run_step copilot-v1-error v1_bad_input

# 2. The suites, with the memory and pids controllers on for the whole tree (runc
#    enables them below the pod cgroups itself).
if ! echo "+memory +pids" >/sys/fs/cgroup/cgroup.subtree_control; then
	say "WARN could not enable memory/pids in /sys/fs/cgroup (available: $(cat /sys/fs/cgroup/cgroup.controllers))"
	failed="$failed cgroup-controllers"
fi
# shellcheck disable=SC2086 # the filters are word lists
run_step tracer "$TRACER" --test-threads=1 --nocapture $TRACER_FILTER
# The node's shared program set on this kernel. 250 copilots do not fit in the VM's
# 2 GiB: that test runs on the host only.
run_step node "$NODE" --test-threads=1 --skip two_hundred_fifty_pods_on_one_node
if [ -n "$FIXTURES" ]; then
	# shellcheck disable=SC2086
	run_step fixtures "$FIXTURES" --test-threads=1 $FIXTURES_FILTER
fi

# 3. A direct look at the kernel paths copilot takes here, without runc. Two container-like
#    cgroups: A runs leader_exit (its leader thread exits 300 ms before the process), B,
#    under a 32 MiB limit, runs memhog (OOM-killed). The xtask reads the JSON lines.
#    `probe no-mark-victim` runs copilot without oom/mark_victim (a hidden flag of
#    `copilot trace`), so B's OOM kill can only come from memory.events.
A=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
B=bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
probe() {
	label=$1
	# A pod of its own per run: a cgroup that already ran something is, rightly, reported
	# as exited by copilot's snapshot.
	pod=$PODS/probe-$label
	echo "+memory" >/sys/fs/cgroup/cgroup.subtree_control || return 2
	echo "+memory" >$PODS/cgroup.subtree_control || return 2
	mkdir -p "$pod/$A" "$pod/$B" || return 2
	echo "+memory" >"$pod/cgroup.subtree_control" || return 2
	echo $((32 << 20)) >"$pod/$B/memory.max" || return 2
	extra=
	if [ "$label" = no-mark-victim ]; then
		extra=--without-oom-tracepoint
	fi
	# shellcheck disable=SC2086 # $extra is one flag or none
	"$COPILOT_BIN" trace --pod-cgroup "$pod" $extra >/tmp/probe.jsonl 2>/tmp/probe.err &
	tracer=$!
	i=0
	while ! grep -q '"type":"ready"' /tmp/probe.jsonl && [ $i -lt 600 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	if [ "$label" = full ]; then
		sh -c "echo \$\$ >$pod/$A/cgroup.procs && exec $HELPERS_DIR/leader_exit 300 6"
		say "PROBE-RC leader_exit $?"
	fi
	sh -c "echo \$\$ >$pod/$B/cgroup.procs && exec $HELPERS_DIR/memhog"
	say "PROBE-RC memhog $?"
	i=0
	# The keys of a copilot::trace::Line come in alphabetical order (its to_json).
	while ! grep -q "\"container_id\":\"$B\".*\"state\":\"exited\"" /tmp/probe.jsonl && [ $i -lt 300 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	kill -TERM $tracer
	wait $tracer
	rc=$?
	sed "s/^/COPILOT-VM-PROBE-$label /" /tmp/probe.jsonl
	sed "s/^/COPILOT-VM-PROBE-LOG-$label /" /tmp/probe.err
	say "PROBE-MEMORY-EVENTS-$label $(tr '\n' ' ' <"$pod/$B/memory.events")"
	rmdir "$pod/$A" "$pod/$B" "$pod" || say "WARN could not remove $pod"
	return $rc
}
run_step probe probe full
run_step probe-no-mark-victim probe no-mark-victim

# 4. The kernel's facts from tracefs, mounted only now: an oracle independent of the
#    BTF prototypes copilot read (the xtask checks copilot's paths against it).
mount -t tracefs tracefs /sys/kernel/tracing
format=/sys/kernel/tracing/events/sched/sched_process_exit/format
if grep -q 'group_dead;' "$format"; then gd=true; else gd=false; fi
if [ -d /sys/kernel/tracing/events/oom/mark_victim ]; then mv=true; else mv=false; fi
if [ -r /sys/kernel/btf/vmlinux ]; then btf=true; else btf=false; fi
say "KERNEL release=$(uname -r) group_dead_field=$gd mark_victim=$mv btf=$btf cgroup2_controllers=$(tr ' ' , </sys/fs/cgroup/cgroup.controllers)"

if [ -z "$failed" ]; then
	say "RESULT: pass"
else
	say "RESULT: fail$failed"
fi
sync
poweroff -f
