#!/usr/bin/env bash
# Build (once) and cache Bacula 15.0.3 from Debian trixie's source package, for the
# end-to-end tests and for building ec2-fd.so.
#
#   bash packaging/build-bacula.sh        -> last stdout line: the install prefix
#
# Cache: ${BACULA_EC2_CACHE:-$HOME/.cache/bacula-ec2}/bacula-15.0.3-<hash>/
#   install/    configure --prefix (sbin/, etc/, scripts/, plugins/, working/ ...)
#   src/        the configured and built source tree (needed to build the plugin)
#   logs/       configure/make/install logs
#   .complete   written last; its presence means the cache is usable
# <hash> covers the configure flags and SCRIPT_FORMAT, so changing either rebuilds.
# The downloaded source package is kept in <cache root>/downloads/ across rebuilds.
# Never touches the system's apt state: apt runs with a private sources list, lists
# directory and cache.
set -euo pipefail

SCRIPT_FORMAT=1
BACULA_VERSION=15.0.3
DEBIAN_VERSION=15.0.3-3
ORIG_TARBALL="bacula_${BACULA_VERSION}.orig.tar.gz"
ORIG_SHA256=294afd3d2eb9d5b71c3d0e88fdf19eb513bfdb843b28d35c0552e4ae062827a1
DEB_SRC_LINE='deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main'
BUILD_DEPS=(build-essential pkg-config libsqlite3-dev sqlite3 libssl-dev zlib1g-dev
            liblzo2-dev libacl1-dev libcap-dev libncurses-dev libreadline-dev
            debian-archive-keyring)
JOBS=${BACULA_EC2_JOBS:-2}

# '@P@' stands for the install prefix; the hash is taken over this template, so the
# cache key does not depend on where the cache lives.
CONFIGURE_FLAGS=(
    --prefix=@P@ --sbindir=@P@/sbin --sysconfdir=@P@/etc --mandir=@P@/man
    --with-scriptdir=@P@/scripts --with-working-dir=@P@/working --with-pid-dir=@P@/working
    --with-subsys-dir=@P@/working --with-plugindir=@P@/plugins --with-archivedir=@P@/archive
    --with-sqlite3 --without-mysql --without-postgresql --disable-bat --disable-s3
    --disable-kubernetes-plugin --disable-docker-plugin --disable-cdp-plugin
    --disable-antivirus-plugin
)

CACHE_ROOT=${BACULA_EC2_CACHE:-$HOME/.cache/bacula-ec2}
KEY=$(printf '%s\n' "format=$SCRIPT_FORMAT" "$DEBIAN_VERSION" "${CONFIGURE_FLAGS[@]}" \
      | sha256sum | cut -c1-12)
CACHE="$CACHE_ROOT/bacula-$BACULA_VERSION-$KEY"
PREFIX="$CACHE/install"

# Fast path: no lock, no subprocess beyond the hash above.
if [[ -f "$CACHE/.complete" ]]; then
    echo "$PREFIX"
    exit 0
fi

TOOL=build-bacula
# shellcheck source=packaging/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"


mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/bacula-$BACULA_VERSION-$KEY.lock"
if ! flock -n 9; then
    note "another build holds the lock; waiting"
    flock 9
fi
if [[ -f "$CACHE/.complete" ]]; then   # built by whoever held the lock
    echo "$PREFIX"
    exit 0
fi


tarball_ok() {
    [[ -f "$1" ]] && echo "$ORIG_SHA256  $1" | sha256sum --check --status
}

# Fetch the orig tarball via a private apt state (sources list, lists, cache).
fetch_source() {
    local dl="$CACHE_ROOT/downloads"
    local tarball="$dl/$ORIG_TARBALL"
    if tarball_ok "$tarball"; then
        echo "$tarball"
        return 0
    fi
    local apt_dir="$CACHE_ROOT/apt"
    mkdir -p "$dl" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
    printf '%s\n' "$DEB_SRC_LINE" >"$apt_dir/sources.list"
    local apt_opts=(
        -o "Dir::Etc::SourceList=$apt_dir/sources.list"
        -o "Dir::Etc::SourceParts=/dev/null"
        -o "Dir::State::Lists=$apt_dir/lists"
        -o "Dir::Cache=$apt_dir/cache"
    )
    note "fetching Debian source package bacula=$DEBIAN_VERSION (private apt state in $apt_dir)"
    mkdir -p "$CACHE_ROOT/logs"
    run_logged "$CACHE_ROOT/logs/apt-source-update.log" apt-get "${apt_opts[@]}" update
    (cd "$dl" && run_logged "$CACHE_ROOT/logs/apt-source.log" \
        apt-get "${apt_opts[@]}" source --download-only "bacula=$DEBIAN_VERSION")
    tarball_ok "$tarball" || die "sha256 mismatch or missing $tarball (expected $ORIG_SHA256)"
    echo "$tarball"
}

ensure_build_deps "$CACHE_ROOT/logs/apt-install.log"
TARBALL=$(fetch_source)

# Anything left here is a partial build (no .complete): start clean. The tree is built
# in place because configure bakes the absolute prefix and source paths into it.
rm -rf "$CACHE"
mkdir -p "$CACHE/logs" "$CACHE/src"
LOGS="$CACHE/logs"

note "unpacking $(basename "$TARBALL")"
tar -xzf "$TARBALL" -C "$CACHE/src" --strip-components=1

flags=()
for f in "${CONFIGURE_FLAGS[@]}"; do flags+=("${f//@P@/$PREFIX}"); done

SECONDS=0
note "configure (log: $LOGS/configure.log)"
(cd "$CACHE/src" && run_logged "$LOGS/configure.log" ./configure "${flags[@]}")
note "make -j$JOBS (log: $LOGS/make.log)"
(cd "$CACHE/src" && run_logged "$LOGS/make.log" make -j"$JOBS")
note "make install (log: $LOGS/install.log)"
(cd "$CACHE/src" && run_logged "$LOGS/install.log" make install)
[[ -x "$PREFIX/sbin/bacula-fd" && -x "$PREFIX/sbin/bacula-dir" && -x "$PREFIX/sbin/bacula-sd" \
   && -x "$PREFIX/sbin/bconsole" ]] || die "make install did not produce the daemons in $PREFIX/sbin"

printf 'bacula %s (Debian %s), key %s, built %s in %ss\n' "$BACULA_VERSION" "$DEBIAN_VERSION" \
    "$KEY" "$(date -u +%FT%TZ)" "$SECONDS" >"$CACHE/.complete"
note "done in ${SECONDS}s: $PREFIX"
echo "$PREFIX"
