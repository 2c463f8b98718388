#!/usr/bin/env bash
# A minimal Debian 13 (trixie) root with Debian's own bacula-fd installed, for testing the
# package against the very FD binary an admin runs (tests/package/, `make test-package`).
#
#   bash packaging/trixie-root.sh            -> last stdout line: the cached tarball
#   bash packaging/trixie-root.sh --unpack DIR
#                                            -> unpacks a fresh root into DIR (must be empty
#                                               or absent); last stdout line: DIR
#
# Cache: ${BACULA_EC2_CACHE:-$HOME/.cache/bacula-ec2}/
#   trixie-root-f<FORMAT>.tar.zst   the root (debootstrap --variant=minbase + bacula-fd)
#   trixie-root-f<FORMAT>.info      what was checked in it (versions, paths, timings)
#   trixie-debs/                    debootstrap's .deb cache (a rebuild downloads less)
#   tools/debootstrap-<ver>/        debootstrap itself when the host has none
# Building needs root and deb.debian.org; a cached run only unpacks.
# The host's /etc and /usr are never written: debootstrap, when missing, is fetched with a
# private apt state and unpacked with dpkg-deb -x; apt for the root runs inside it (chroot).
# The root keeps /usr/sbin/policy-rc.d (exit 101) so that package scripts run inside it
# never try to start services.
set -euo pipefail

FORMAT=1
SUITE=trixie
MIRROR=http://deb.debian.org/debian
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
FD_VERSION=15.0.3        # what /usr/sbin/bacula-fd must report
FD_DEB_VERSION=15.0.3-3  # the Debian package version the plugin package is built for

CACHE_ROOT=${BACULA_EC2_CACHE:-$HOME/.cache/bacula-ec2}
TARBALL="$CACHE_ROOT/trixie-root-f$FORMAT.tar.zst"
INFO="$CACHE_ROOT/trixie-root-f$FORMAT.info"

TOOL=trixie-root
# shellcheck source=packaging/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

UNPACK=""
while [[ $# -gt 0 ]]; do
    case $1 in
        --unpack) UNPACK=${2:?--unpack needs a directory}; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done

unpack() {
    local dest=$1
    if [[ -e $dest ]] && [[ -n $(ls -A "$dest") ]]; then
        die "$dest is not empty"
    fi
    mkdir -p "$dest"
    local t0=$SECONDS
    tar --zstd -xpf "$TARBALL" --numeric-owner -C "$dest"
    [[ -x $dest/usr/sbin/bacula-fd ]] || die "no usr/sbin/bacula-fd in $dest after unpacking $TARBALL"
    note "unpacked $TARBALL into $dest in $((SECONDS - t0))s"
    (cd "$dest" && pwd)
}

if [[ -f $TARBALL && -f $INFO ]]; then
    if [[ -n $UNPACK ]]; then unpack "$UNPACK"; else echo "$TARBALL"; fi
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "building the root needs root (debootstrap, chroot)"
mkdir -p "$CACHE_ROOT/logs"
exec 9>"$CACHE_ROOT/trixie-root-f$FORMAT.lock"
if ! flock -n 9; then
    note "another build holds the lock; waiting"
    flock 9
fi
if [[ -f $TARBALL && -f $INFO ]]; then
    if [[ -n $UNPACK ]]; then unpack "$UNPACK"; else echo "$TARBALL"; fi
    exit 0
fi


# debootstrap: the host's if installed, else trixie's, fetched with a private apt state.
DEBOOTSTRAP=()
find_debootstrap() {
    if command -v debootstrap >/dev/null; then
        DEBOOTSTRAP=(debootstrap)
        return
    fi
    local apt_dir="$CACHE_ROOT/apt-bin" tools="$CACHE_ROOT/tools"
    local existing
    existing=$(ls -d "$tools"/debootstrap-*/usr/sbin/debootstrap 2>/dev/null | tail -n 1 || true)
    if [[ -z $existing ]]; then
        mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$tools"
        printf 'deb [signed-by=%s] %s %s main\n' "$KEYRING" "$MIRROR" "$SUITE" >"$apt_dir/sources.list"
        local apt_opts=(
            -o "Dir::Etc::SourceList=$apt_dir/sources.list"
            -o "Dir::Etc::SourceParts=/dev/null"
            -o "Dir::State::Lists=$apt_dir/lists"
            -o "Dir::Cache=$apt_dir/cache"
        )
        note "fetching debootstrap from $SUITE (private apt state in $apt_dir)"
        run_logged "$CACHE_ROOT/logs/debootstrap-update.log" apt-get "${apt_opts[@]}" update
        local dl
        dl=$(mktemp -d "$tools/dl.XXXXXX")
        (cd "$dl" && run_logged "$CACHE_ROOT/logs/debootstrap-download.log" \
            apt-get "${apt_opts[@]}" download debootstrap)
        local deb ver
        deb=$(ls "$dl"/debootstrap_*.deb)
        ver=$(dpkg-deb -f "$deb" Version)
        rm -rf "$tools/debootstrap-$ver"
        dpkg-deb -x "$deb" "$tools/debootstrap-$ver"
        rm -rf "$dl"
        existing="$tools/debootstrap-$ver/usr/sbin/debootstrap"
    fi
    local base
    base=$(dirname "$(dirname "$(dirname "$existing")")")
    DEBOOTSTRAP=(env "DEBOOTSTRAP_DIR=$base/usr/share/debootstrap" "$existing")
}

START=$SECONDS
find_debootstrap
BUILD=$(mktemp -d "$CACHE_ROOT/trixie-root-build.XXXXXX")
cleanup() {
    # debootstrap mounts /proc and /sys in the target; never delete through a mount.
    local m
    for m in proc sys dev/pts; do
        umount -l "$BUILD/$m" 2>/dev/null || true
    done
    if grep -q " $BUILD/" /proc/self/mountinfo; then
        note "mounts left under $BUILD; not deleting it"
    else
        rm -rf "$BUILD"
    fi
}
trap cleanup EXIT

mkdir -p "$CACHE_ROOT/trixie-debs"
note "debootstrap --variant=minbase $SUITE (log: $CACHE_ROOT/logs/debootstrap.log)"
t0=$SECONDS
run_logged "$CACHE_ROOT/logs/debootstrap.log" "${DEBOOTSTRAP[@]}" --variant=minbase \
    --keyring="$KEYRING" --cache-dir="$CACHE_ROOT/trixie-debs" "$SUITE" "$BUILD" "$MIRROR"
T_DEBOOTSTRAP=$((SECONDS - t0))

printf '#!/bin/sh\n# trixie-root.sh: no service starts inside this root.\nexit 101\n' \
    >"$BUILD/usr/sbin/policy-rc.d"
chmod 0755 "$BUILD/usr/sbin/policy-rc.d"

in_root() { chroot "$BUILD" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive "$@"; }

note "apt-get install bacula-fd inside the root (log: $CACHE_ROOT/logs/trixie-apt.log)"
t0=$SECONDS
run_logged "$CACHE_ROOT/logs/trixie-apt-update.log" in_root apt-get update
run_logged "$CACHE_ROOT/logs/trixie-apt.log" in_root apt-get install -y "bacula-fd=$FD_DEB_VERSION"
T_APT=$((SECONDS - t0))
in_root apt-get clean
rm -rf "$BUILD"/var/lib/apt/lists/* "$BUILD"/var/log/apt/*.log

# What the package test relies on, checked here once.
deb_version=$(in_root dpkg-query -W -f='${Version}' bacula-fd)
[[ $deb_version == "$FD_DEB_VERSION" ]] || die "bacula-fd in the root is $deb_version, not $FD_DEB_VERSION"
# bacula-fd -? prints its usage, with the version, and exits non-zero.
fd_usage=$(in_root /usr/sbin/bacula-fd -? 2>&1 || true)
fd_reported=$(sed -n 's/.*Version: *\([0-9][0-9.]*\).*/\1/p' <<<"$fd_usage" | head -n 1)
[[ $fd_reported == "$FD_VERSION" ]] || die "/usr/sbin/bacula-fd reports '${fd_reported}', not $FD_VERSION:
$fd_usage"
conf="$BUILD/etc/bacula/bacula-fd.conf"
[[ -f $conf ]] || die "no /etc/bacula/bacula-fd.conf in the root"
conf_value() { sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*\"\{0,1\}\([^\"]*\)\"\{0,1\}[[:space:]]*$/\1/Ip" "$conf" | head -n 1; }
plugin_dir=$(conf_value 'Plugin Directory')
working_dir=$(conf_value 'WorkingDirectory')
[[ -n $plugin_dir && -d $BUILD$plugin_dir ]] || die "Plugin Directory '$plugin_dir' of $conf is not a directory"
[[ -n $working_dir && -d $BUILD$working_dir ]] || die "WorkingDirectory '$working_dir' of $conf is not a directory"

note "packing the root into $TARBALL"
t0=$SECONDS
for m in proc sys dev/pts; do umount -l "$BUILD/$m" 2>/dev/null || true; done
tmp_tar=$(mktemp "$CACHE_ROOT/trixie-root.tar.XXXXXX")
tar --zstd -cpf "$tmp_tar" --numeric-owner --one-file-system -C "$BUILD" .
T_PACK=$((SECONDS - t0))
size=$(du -sm "$BUILD" | cut -f1)

{
    echo "format=$FORMAT"
    echo "suite=$SUITE"
    echo "bacula_fd_deb=$deb_version"
    echo "bacula_fd_reports=$fd_reported"
    echo "fd_binary=/usr/sbin/bacula-fd"
    echo "fd_config=/etc/bacula/bacula-fd.conf"
    echo "plugin_dir=$plugin_dir"
    echo "working_dir=$working_dir"
    echo "root_size_mib=$size"
    echo "seconds_debootstrap=$T_DEBOOTSTRAP"
    echo "seconds_apt=$T_APT"
    echo "seconds_pack=$T_PACK"
    echo "seconds_total=$((SECONDS - START))"
    echo "built=$(date -u +%FT%TZ)"
} >"$INFO.tmp"
chmod 0644 "$tmp_tar"
mv "$tmp_tar" "$TARBALL"
mv "$INFO.tmp" "$INFO"     # the .info appears last: its presence means the cache is usable
note "root built in $((SECONDS - START))s ($size MiB; bacula-fd $deb_version, plugins in $plugin_dir)"

if [[ -n $UNPACK ]]; then unpack "$UNPACK"; else echo "$TARBALL"; fi
