#!/usr/bin/env bash
# Debian packages the project needs to build its virtual environment (the Bacula build
# dependencies are installed by build-bacula.sh). Installs only what is missing.
set -euo pipefail
need=()
# openssl: the simulator's TLS CA; tmux: the terminal of tests/test_bec2_progress.py;
# fdisk (sfdisk), dosfstools, mtools, e2fsprogs, xfsprogs, ntfs-3g, btrfs-progs: the guest
# disks of the file-level restore tests, made in user space (devkit/guestdisks.py)
for pkg in python3 python3-venv python3-pip make openssl tmux \
    fdisk dosfstools mtools e2fsprogs xfsprogs ntfs-3g btrfs-progs; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
# A Python other than Debian's (pyenv, a container image) brings venv and pip itself.
if python3 -c 'import venv, ensurepip' 2>/dev/null; then
    need=("${need[@]/python3-venv}"); need=("${need[@]/python3-pip}"); need=("${need[@]/python3}")
fi
mapfile -t need < <(printf '%s\n' "${need[@]}" | grep -v '^$' || true)
if ((${#need[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "install-deps: please install: ${need[*]} (as root: apt-get install ${need[*]})" >&2
        exit 1
    fi
    echo "install-deps: installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
