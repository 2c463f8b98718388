#!/usr/bin/env bash
# Build ec2-fd.so (the metaplugin glue) against a configured Bacula 15.0.x tree.
#
#   bash packaging/build-plugin.sh [--python PY] [--out DIR]
#       against the project's own cached Bacula 15.0.3 (packaging/build-bacula.sh)
#   bash packaging/build-plugin.sh --bacula-src DIR --configure-flags "FLAGS" [--python PY] [--out DIR]
#       against the Bacula 15.0.x source tree DIR (left untouched: it is copied into the
#       cache and configured there with FLAGS, the configure options of the bacula-fd
#       the plugin is for; VAR=VALUE words such as CFLAGS=... are configure arguments
#       too). FLAGS is split like a shell would split it (quotes, backslashes), nothing
#       is expanded. CFLAGS, CXXFLAGS, CPPFLAGS and LDFLAGS from the environment are not
#       used: give them in FLAGS. Only configure runs (no make): the plugin needs the
#       headers, config.h and the six pluginlib objects, not libbac.
#
# Prints the path of ec2-fd.so on the last stdout line: in the cache, or the copy in
# --out DIR. The result is cached in <tree cache>/plugin/ec2-fd-<hash>/ keyed by
# ec2-fd.c, the generated ec2-fd-params.h and Makefile.plugin, so a repeated call
# only regenerates the header and hashes (well under a second). A --bacula-src tree
# is cached in ${BACULA_EC2_CACHE:-$HOME/.cache/bacula-ec2}/plugin-trees/
# bacula-<version>-<hash>/ (src/, logs/, .complete), <hash> covering the flags and a
# fingerprint of DIR (every file's path, size and mtime).
# PY (default: $PYTHON, else the repo's .venv, else python3) must be able to import
# bacula_ec2 (the header is generated from bacula_ec2.params).
set -euo pipefail

TREE_FORMAT=1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PY=${PYTHON:-}
OUT=""
BACULA_SRC=""
CONFIGURE_FLAGS_STR=""
HAVE_FLAGS=0

while [[ $# -gt 0 ]]; do
    case $1 in
        --python) PY=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --bacula-src) BACULA_SRC=$2; shift 2 ;;
        --configure-flags) CONFIGURE_FLAGS_STR=$2; HAVE_FLAGS=1; shift 2 ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "build-plugin: unknown argument: $1" >&2; exit 2 ;;
    esac
done
if [[ -z $PY ]]; then
    if [[ -x $REPO/.venv/bin/python ]]; then PY=$REPO/.venv/bin/python; else PY=python3; fi
fi

note() { echo "build-plugin: $*" >&2; }
die() { echo "build-plugin: ERROR: $*" >&2; exit 1; }

# Configure a copy of $BACULA_SRC with the given flags (cached); sets CACHE and SRC.
configure_tree() {
    local src_in flags=() version fingerprint key root tree
    [[ -d $BACULA_SRC ]] || die "--bacula-src: no such directory: $BACULA_SRC"
    src_in=$(cd "$BACULA_SRC" && pwd)
    [[ -x $src_in/configure && -f $src_in/src/version.h && -f $src_in/src/plugins/fd/Makefile.inc.in ]] \
        || die "--bacula-src $src_in: not a Bacula source tree (configure, src/version.h or src/plugins/fd/Makefile.inc.in missing)"
    version=$(sed -n 's/^#define VERSION[[:space:]]*"\(.*\)"$/\1/p' "$src_in/src/version.h")
    [[ $version == 15.0.* ]] \
        || die "--bacula-src $src_in is Bacula '${version:-unknown}'; ec2-fd.so supports Bacula 15.0.x only"
    # Split like a shell (quotes, backslashes) without expanding anything.
    if [[ -n ${CONFIGURE_FLAGS_STR//[[:space:]]/} ]]; then
        local split
        split=$(mktemp)
        if ! printf '%s' "$CONFIGURE_FLAGS_STR" | xargs -r printf '%s\0' >"$split"; then
            rm -f "$split"
            die "--configure-flags: cannot split it (unbalanced quote?): $CONFIGURE_FLAGS_STR"
        fi
        mapfile -d '' flags <"$split"
        rm -f "$split"
    fi
    fingerprint=$(cd "$src_in" && find . -path ./.git -prune -o -type f -printf '%P\t%s\t%T@\n' \
                  | LC_ALL=C sort | sha256sum | cut -c1-16)
    key=$(printf '%s\n' "format=$TREE_FORMAT" "version=$version" "tree=$fingerprint" "${flags[@]}" \
          | sha256sum | cut -c1-12)
    root=${BACULA_EC2_CACHE:-$HOME/.cache/bacula-ec2}/plugin-trees
    tree="$root/bacula-$version-$key"
    CACHE=$tree
    SRC=$tree/src
    [[ -f $tree/.complete ]] && return 0

    mkdir -p "$root"
    exec 8>"$tree.lock"
    if ! flock -n 8; then
        note "another build configures $tree; waiting"
        flock 8
    fi
    [[ -f $tree/.complete ]] && return 0
    rm -rf "$tree"            # a partial tree (no .complete): start clean
    mkdir -p "$tree/logs"
    note "copying $src_in to $SRC"
    cp -a "$src_in/." "$SRC/"
    # A config.cache or config.status from wherever DIR was configured would leak into ours.
    rm -f "$SRC/config.cache" "$SRC/config.status"
    note "configure ${#flags[@]} flags (log: $tree/logs/configure.log)"
    if ! (cd "$SRC" && env -u CFLAGS -u CXXFLAGS -u CPPFLAGS -u LDFLAGS ./configure "${flags[@]}") \
            >"$tree/logs/configure.log" 2>&1; then
        note "configure failed in $SRC; last lines of $tree/logs/configure.log:"
        tail -n 40 "$tree/logs/configure.log" >&2
        exit 1
    fi
    [[ -f $SRC/src/plugins/fd/Makefile.inc && -f $SRC/src/config.h ]] \
        || die "configure did not produce src/plugins/fd/Makefile.inc and src/config.h in $SRC"
    { printf 'bacula %s from %s, configured %s with:\n' "$version" "$src_in" "$(date -u +%FT%TZ)"
      printf '  %s\n' "${flags[@]}"; } >"$tree/.complete"
    exec 8>&-
}

if [[ -n $BACULA_SRC ]]; then
    [[ $HAVE_FLAGS -eq 1 ]] || die "--bacula-src needs --configure-flags (the flags of the target bacula-fd; \"\" for none)"
    configure_tree
else
    [[ $HAVE_FLAGS -eq 0 ]] || die "--configure-flags needs --bacula-src"
    PREFIX=$(bash "$HERE/build-bacula.sh" | tail -n 1)
    CACHE=$(dirname "$PREFIX")
    SRC="$CACHE/src"
fi
[[ -f $SRC/src/plugins/fd/Makefile.inc ]] || { note "no configured tree in $SRC"; exit 1; }
HEADER=$(mktemp)
trap 'rm -f "$HEADER"' EXIT
"$PY" "$HERE/gen_params_header.py" -o "$HEADER"

KEY=$(cat "$HERE/ec2-fd.c" "$HEADER" "$HERE/Makefile.plugin" | sha256sum | cut -c1-12)
DEST="$CACHE/plugin/ec2-fd-$KEY"
SO="$DEST/ec2-fd.so"

publish() {
    if [[ -n $OUT ]]; then
        mkdir -p "$OUT"
        install -m 0644 "$SO" "$OUT/ec2-fd.so"
        echo "$(cd "$OUT" && pwd)/ec2-fd.so"
    else
        echo "$SO"
    fi
}

if [[ -f $SO ]]; then
    publish
    exit 0
fi

mkdir -p "$CACHE/plugin"
# One lock per Bacula tree: the pluginlib objects are built inside it.
exec 9>"$CACHE/plugin/.lock"
flock 9
if [[ -f $SO ]]; then
    publish
    exit 0
fi

BUILD=$(mktemp -d "$CACHE/plugin/build.XXXXXX")
cp "$HERE/ec2-fd.c" "$BUILD/"
cp "$HEADER" "$BUILD/ec2-fd-params.h"
LOG="$BUILD/build.log"
note "compiling ec2-fd.so (log: $LOG)"
if ! make -C "$BUILD" -f "$HERE/Makefile.plugin" BACULA_SRC="$SRC" >"$LOG" 2>&1; then
    note "build failed; last lines of $LOG:"
    tail -n 40 "$LOG" >&2
    exit 1
fi
[[ -f $BUILD/.libs/ec2-fd.so ]] || { note "no .libs/ec2-fd.so after make (see $LOG)"; exit 1; }
cp "$BUILD/.libs/ec2-fd.so" "$BUILD/ec2-fd.so"
rm -rf "$DEST"
mv "$BUILD" "$DEST"      # atomic publish: $SO appears only when complete
publish
