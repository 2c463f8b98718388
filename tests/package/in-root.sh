#!/bin/sh
# in-root.sh ROOT BIND_DIR [NAME=VALUE ...] COMMAND [ARG ...]
#
# Runs COMMAND (an absolute path inside ROOT) chrooted into ROOT, in a private mount
# namespace of its own where BIND_DIR (a directory of this machine) is bind-mounted at the
# same path inside ROOT (BIND_DIR "-": none) and /proc, /dev/pts are mounted. The environment is empty but for PATH, HOME,
# LANG and the NAME=VALUE given, as on a host where a service starts bacula-fd.
# Every step execs, so the PID the caller holds is COMMAND's (SIGTERM reaches it); the
# mounts exist only in that namespace and vanish with its last process, so nothing is
# ever mounted in this machine's own namespace (deleting ROOT afterwards is safe).
# Used by tests/package/ (the packaged Debian bacula-fd); needs root.
set -eu
if [ "${1:-}" != "--in-namespace" ]; then
    exec unshare --mount --propagation private -- "$0" --in-namespace "$@"
fi
shift
root=$1
bind=$2
shift 2
case $bind in
    -) ;;
    /*)
        mkdir -p "$root$bind"
        mount --bind "$bind" "$root$bind"
        ;;
    *) echo "in-root.sh: BIND_DIR must be absolute: $bind" >&2; exit 2 ;;
esac
mount -t proc proc "$root/proc"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$root/dev/pts"
exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"
