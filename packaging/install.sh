#!/usr/bin/env bash
# Install the ec2 plugin on a Bacula File Daemon host.
#
#   install.sh --plugin-dir DIR --sbin-dir DIR --python /path/to/venv/bin/python [--so FILE]
#
#   --plugin-dir  the FD's "Plugin Directory" (bacula-fd.conf); gets ec2-fd.so
#   --sbin-dir    the directory of the bacula-fd binary (its realpath); gets the
#                 ec2-backend launcher, because the FD runs <dir of bacula-fd>/ec2-backend
#   --python      an interpreter that can import bacula_ec2 (e.g. a virtualenv's python)
#   --so FILE     a prebuilt ec2-fd.so; default: build one with build-plugin.sh.
#                 The .so must match the FD's Bacula version and configure options
#                 (metaplugin-protocol.md 8.3); the default build matches the test
#                 build of build-bacula.sh, not necessarily a distribution's bacula-fd.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PLUGIN_DIR="" SBIN_DIR="" PY="" SO=""

usage() { sed -n '2,14p' "$0" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --plugin-dir) PLUGIN_DIR=$2; shift 2 ;;
        --sbin-dir) SBIN_DIR=$2; shift 2 ;;
        --python) PY=$2; shift 2 ;;
        --so) SO=$2; shift 2 ;;
        -h|--help) usage ;;
        *) echo "install.sh: unknown argument: $1" >&2; usage ;;
    esac
done
[[ -n $PLUGIN_DIR && -n $SBIN_DIR && -n $PY ]] || usage

# The launcher must name an absolute interpreter: the FD runs it with its own
# (often minimal) environment and cwd /.
# Absolute, but not symlink-resolved: a venv's python is a symlink to the base one.
case $PY in
    */*) ;;
    *) PY=$(command -v "$PY") || { echo "install.sh: python not found: $PY" >&2; exit 1; } ;;
esac
[[ $PY == /* ]] || PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"
[[ -x $PY ]] || { echo "install.sh: not executable: $PY" >&2; exit 1; }
if ! "$PY" -c 'import bacula_ec2.backend' >/dev/null 2>&1; then
    echo "install.sh: $PY cannot import bacula_ec2.backend" >&2
    exit 1
fi

if [[ -z $SO ]]; then
    SO=$(bash "$HERE/build-plugin.sh" --python "$PY" | tail -n 1)
fi
[[ -f $SO ]] || { echo "install.sh: no such plugin file: $SO" >&2; exit 1; }

mkdir -p "$PLUGIN_DIR" "$SBIN_DIR"
[[ $SO -ef $PLUGIN_DIR/ec2-fd.so ]] || install -m 0644 "$SO" "$PLUGIN_DIR/ec2-fd.so"

# Single-quote the interpreter path for sh ('\'' inside).
quoted_py="'${PY//\'/\'\\\'\'}'"
tmp=$(mktemp "$SBIN_DIR/.ec2-backend.XXXXXX")
while IFS= read -r line; do
    printf '%s\n' "${line//@PYTHON@/$quoted_py}"
done <"$HERE/ec2-backend.in" >"$tmp"
chmod 0755 "$tmp"
mv -f "$tmp" "$SBIN_DIR/ec2-backend"

echo "installed $PLUGIN_DIR/ec2-fd.so"
echo "installed $SBIN_DIR/ec2-backend -> $PY -m bacula_ec2.backend"
