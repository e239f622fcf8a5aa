#!/bin/busybox sh
# PID 1 of the test VM: mounts the kernel filesystems and cgroup v2 with the memory controller
# enabled below the root, runs the guest suite with vitest, reports on the console and powers off.
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin HOME=/tmp TMPDIR=/tmp NO_COLOR=1 CI=1 MP_VM_GUEST=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# cgroup-v2.rst "Controlling Controllers": children get the memory controller only when the parent
# lists it in cgroup.subtree_control, and a cgroup with processes cannot list it (no internal
# processes). So, as under systemd's Delegate=: a subtree mp-vm/ with the controller, the test
# runner in its leaf mp-vm/runner/, and the tests' cgroups made in mp-vm/ beside the runner. The
# root cgroup would not do for the runner: it has no memory.current.
echo +memory > /sys/fs/cgroup/cgroup.subtree_control
mkdir /sys/fs/cgroup/mp-vm /sys/fs/cgroup/mp-vm/runner
echo +memory > /sys/fs/cgroup/mp-vm/cgroup.subtree_control
echo $$ > /sys/fs/cgroup/mp-vm/runner/cgroup.procs
ip link set lo up 2>/dev/null
report() { echo "@@mp-vm $*"; }
report boot "$(uname -r)" "$(cut -d' ' -f1 /proc/uptime)"
cd /mp
set -o pipefail
if [ -f /mp-vm-command ]; then
  # A command instead of the test suite (the v2 bench stage: bench/vm.mjs).
  sh /mp-vm-command 2>&1 | cat
else
  # Piped through cat so that vitest does not take the serial console for a terminal.
  node node_modules/vitest/vitest.mjs run --config test/vm/vitest.guest.config.ts $(cat /mp-vm-args 2>/dev/null) 2>&1 | cat
fi
status=$?
# The kernel log stays off the console during the run (loglevel=1 on the command line) so that an
# OOM report cannot land in the middle of a result line; here it is, for the host's failure report.
echo "--- dmesg ---"
dmesg | sed -n "/Run \/init as init process/,\$p"
report exit "$status" "$(cut -d' ' -f1 /proc/uptime)"
poweroff -f
