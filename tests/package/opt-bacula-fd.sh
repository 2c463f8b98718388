#!/usr/bin/env bash
# opt-bacula-fd.sh FLAGS_FILE  ->  prints the directory holding opt/bacula/... on its last line
#
# A stand-in for bacula.org's bacula-fd package (tests/package/test_opt_bacula.py): Bacula
# 15.0.3 from the upstream tarball (the orig.tar.gz that packaging/build-deb.sh fetched),
# configured with FLAGS_FILE (packaging/opt-bacula/configure-flags) and built as a client
# only (src/lib, src/findlib, src/filed), then `make install DESTDIR=stage` of those three:
# stage/opt/bacula/{bin/bacula-fd,lib/libbac*.so,etc/bacula-fd.conf,...}. Built by us, not by
# bacula.org: it proves the recipe's flags and paths, not bacula.org's binaries. Cached in
# ${BACULA_EC2_CACHE:-~/.cache/bacula-ec2}/opt-bacula-fd-<hash of the flags and this script>/.
set -euo pipefail
flags_file=$1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE_ROOT=${BACULA_EC2_CACHE:-$HOME/.cache/bacula-ec2}
TARBALL=$CACHE_ROOT/downloads/bacula_15.0.3.orig.tar.gz
[[ -f $TARBALL ]] || { echo "opt-bacula-fd: $TARBALL missing (make package fetches it)" >&2; exit 1; }
key=$(cat "$flags_file" "$0" | sha256sum | cut -c1-12)
dir=$CACHE_ROOT/opt-bacula-fd-$key
if [[ ! -f $dir/.complete ]]; then
    exec 8>"$dir.lock"
    flock 8
    if [[ ! -f $dir/.complete ]]; then
        rm -rf "$dir"
        mkdir -p "$dir/logs"
        tar xzf "$TARBALL" -C "$dir"
        src=$dir/bacula-15.0.3
        mapfile -d '' flags < <(sed 's/#.*//' "$flags_file" | xargs -r printf '%s\0')
        echo "opt-bacula-fd: configure + make (log: $dir/logs/build.log)" >&2
        # A separate bash: `set -e` is ignored in a subshell on the left of `||`.
        if ! bash -euo pipefail -c '
            dir=$1 src=$2; shift 2
            cd "$src"
            env -u CFLAGS -u CXXFLAGS -u CPPFLAGS -u LDFLAGS ./configure "$@"
            for sub in src/lib src/findlib src/filed; do make -j"$(nproc)" -C "$sub"; done
            mkdir -p "$dir"/stage/opt/bacula/{bin,etc,lib,plugins,working,scripts,log}
            for sub in src/lib src/findlib src/filed; do make -C "$sub" install DESTDIR="$dir/stage"; done
            test -x "$dir/stage/opt/bacula/bin/bacula-fd"
        ' opt-bacula-build "$dir" "$src" "${flags[@]}" >"$dir/logs/build.log" 2>&1; then
            tail -n 30 "$dir/logs/build.log" >&2
            exit 1
        fi
        rm -rf "$src"
        touch "$dir/.complete"
    fi
fi
echo "$dir/stage"
