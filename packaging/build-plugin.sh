#!/usr/bin/env bash
# Build ec2-fd.so (the metaplugin glue) against the cached Bacula 15.0.3 tree.
#
#   bash packaging/build-plugin.sh [--python PY] [--out DIR]
#
# Prints the path of ec2-fd.so on the last stdout line: in the cache, or the copy in
# --out DIR. The result is cached in <bacula cache>/plugin/ec2-fd-<hash>/ keyed by
# ec2-fd.c, the generated ec2-fd-params.h and Makefile.plugin, so a repeated call
# only regenerates the header and hashes (well under a second).
# PY (default: $PYTHON, else the repo's .venv, else python3) must be able to import
# bacula_ec2 (the header is generated from bacula_ec2.params).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PY=${PYTHON:-}
OUT=""

while [[ $# -gt 0 ]]; do
    case $1 in
        --python) PY=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "build-plugin: unknown argument: $1" >&2; exit 2 ;;
    esac
done
if [[ -z $PY ]]; then
    if [[ -x $REPO/.venv/bin/python ]]; then PY=$REPO/.venv/bin/python; else PY=python3; fi
fi

note() { echo "build-plugin: $*" >&2; }

PREFIX=$(bash "$HERE/build-bacula.sh" | tail -n 1)
CACHE=$(dirname "$PREFIX")
SRC="$CACHE/src"
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
