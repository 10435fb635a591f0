#!/bin/bash
# Boots Debian's systemd as PID 1 of a throwaway container, for
# tests/service_systemd.rs. Run by that test as
#   unshare --pid --mount --net --uts --ipc --fork --kill-child \
#     bash boot-systemd.sh DIR CGROUP HELPER UNITS
# with a pty as stdin, stdout and stderr (it becomes the container's
# /dev/console, where systemd writes its boot messages).
#   DIR     an empty directory: a tmpfs is mounted on it, in this mount
#           namespace only, holding the container's writable layer
#   CGROUP  an empty cgroup (v2) made for this container: the root of its
#           cgroup namespace, where systemd makes its slices and scopes
#   HELPER  the binary to install as the package does
#   UNITS   debian/, with the units to install as the package does
#
# The container's root is an overlay of the machine's / with a tmpfs on
# top: the machine's programs and accounts, and nothing written to them.
# It has its own /proc (/proc/sys read-only), /sys (read-only), /run,
# /tmp and a minimal /dev (the machine's /dev/net/tun bound in, as udev
# would make it), its own network (a bridge br0) and its own cgroup
# namespace. Nothing it does reaches the machine's services, sockets,
# network, files or kernel settings; killing PID 1 ends it all.
set -euo pipefail
dir=$1 cgroup=$2 helper=$3 units=$4

# Into the cgroup first, then a cgroup namespace rooted at it: systemd sees
# that cgroup as the whole hierarchy.
if [ -z "${BHT_IN_CGROUP:-}" ]; then
  # This shell is PID 1 (exec keeps it); its pid outside is how the test
  # joins the container's namespaces (read through the machine's /proc,
  # still mounted here).
  read -r outside _ </proc/self/stat
  echo "boot-systemd: pid $outside"
  echo $$ >"$cgroup/cgroup.procs"
  BHT_IN_CGROUP=1 exec unshare --cgroup bash "$0" "$@"
fi

mount --make-rprivate /
mount -t tmpfs -o mode=0700 bht-systemd "$dir"
mkdir "$dir/upper" "$dir/work" "$dir/root"
mount -t overlay bht-systemd -o "lowerdir=/,upperdir=$dir/upper,workdir=$dir/work" "$dir/root"
r=$dir/root

# What the Debian package installs for the service (Cargo.toml,
# [package.metadata.deb]) and what its postinst does on a systemd host
# switched to the service: the binary without setuid or capability, QEMU's
# helper path a link to it (the forwarder), the socket enabled the way
# deb-systemd-helper enables it.
install -D -m 0755 "$helper" "$r/usr/libexec/bridge-helper/bridge-helper"
mkdir -p "$r/usr/lib/qemu"
ln -sfn ../../libexec/bridge-helper/bridge-helper "$r/usr/lib/qemu/qemu-bridge-helper"
install -m 0644 "$units/bridge-helper.socket" "$units/bridge-helper.service" "$r/lib/systemd/system/"
mkdir -p "$r/etc/systemd/system/sockets.target.wants"
ln -sfn /lib/systemd/system/bridge-helper.socket "$r/etc/systemd/system/sockets.target.wants/"
# The administrator's ACL.
mkdir -p "$r/etc/qemu"
echo 'allow br0' >"$r/etc/qemu/bridge.conf"
chmod 0644 "$r/etc/qemu/bridge.conf"

# The container's network: the bridge a request asks for.
ip link set lo up
ip link add br0 type bridge
ip link set br0 up

# The API file systems systemd expects a container manager to provide.
mount -t proc proc "$r/proc"
# Read-only, as systemd-nspawn makes them: most of /proc/sys is the
# machine's kernel, not this container's (systemd-sysctl.service would
# apply the machine's sysctl.d, PID 1 would raise fs.file-max and
# fs.nr_open).
for p in sys sysrq-trigger; do
  if [ -e "$r/proc/$p" ]; then
    mount --bind "$r/proc/$p" "$r/proc/$p"
    mount -o remount,bind,ro "$r/proc/$p"
  fi
done
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$r/sys"
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$r/sys/fs/cgroup"
mount -t tmpfs -o mode=0755,nosuid bht-dev "$r/dev"
for node in null zero full random urandom tty net/tun; do
  mkdir -p "$(dirname "$r/dev/$node")"
  touch "$r/dev/$node"
  mount --bind "/dev/$node" "$r/dev/$node"
done
mkdir "$r/dev/pts" "$r/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$r/dev/pts"
ln -s pts/ptmx "$r/dev/ptmx"
touch "$r/dev/console"
mount --bind /proc/self/fd/0 "$r/dev/console"
mount -t tmpfs -o mode=0755,nosuid,nodev bht-run "$r/run"
mount -t tmpfs -o mode=1777,nosuid,nodev bht-tmp "$r/tmp"

cd "$r"
mkdir -p .bht-old-root
pivot_root . .bht-old-root
umount -l /.bht-old-root
rmdir /.bht-old-root
cd /
# sockets.target: sysinit (journald, hence /dev/log) and every enabled
# socket, ours among them; not the machine's own enabled services.
exec env -i container=bht-test /lib/systemd/systemd --system --unit=sockets.target
