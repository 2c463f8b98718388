#!/usr/bin/env bash
# Build the Debian package bacula-ec2-plugin for Debian 13 (trixie)'s bacula-fd 15.0.3-3.
#
#   bash packaging/build-deb.sh [--out DIR] [--no-lintian] [--version V] [--python PY]
#
#   --python PY    an interpreter that imports bacula_ec2, for the generated ec2-fd-params.h
#                  (default: $PYTHON, else the repo's .venv, else python3); not bundled
#   --out DIR      where the .deb goes (default: <repo>/dist); the last stdout line is its path
#   --no-lintian   skip Debian's package checker (it runs by default; an error fails the build)
#   --version V    package version instead of pyproject.toml's (tests only: an upgrade test
#                  needs a second version; the .so and the backend still report their own)
#
# What goes in (Debian's paths, those of the bacula-fd package):
#   /usr/lib/bacula/ec2-fd.so       built by build-plugin.sh against Debian's bacula source
#                                   package 15.0.3-3 (dpkg-source -x: Debian's patches
#                                   applied) with debian/rules' configure flags
#                                   (packaging/debian/configure-flags) and Debian 13's
#                                   dpkg-buildflags (packaging/debian/buildflags-<arch>)
#   /usr/lib/bacula-ec2/            ec2-backend and bec2 frozen by PyInstaller (one-dir: the
#                                   Python runtime, bacula_ec2 and its pinned dependencies
#                                   from packaging/debian/bundle-requirements.txt)
#   /usr/sbin/ec2-backend           symlink: the FD runs <dir of bacula-fd>/ec2-backend
#   /usr/bin/bec2                   symlink
#   /usr/share/doc/bacula-ec2-plugin/, /usr/share/man/
#   /etc/logrotate.d/bacula-ec2-plugin   (conffile) for <WorkingDirectory>/bacula-ec2.log
#
# Caches (${BACULA_EC2_CACHE:-$HOME/.cache/bacula-ec2}/): the Debian source tree
# (debian-src/), its configured copy and the .so (plugin-trees/, by build-plugin.sh), the
# PyInstaller venv and build (pyinstaller/), and the finished .deb with its lintian report
# (deb/<hash of every input>/). A second run with nothing changed only hashes and copies.
set -euo pipefail

FORMAT=1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
DEB=$HERE/debian
PKG=bacula-ec2-plugin
BACULA_VERSION=15.0.3
FD_DEB_VERSION=15.0.3-3
# The three files of Debian's source package bacula 15.0.3-3 (the .dsc lists the others'
# checksums too; dpkg-source checks them again).
SRC_FILES=(
    "bacula_${FD_DEB_VERSION}.dsc 56bc1d3fea3a8c26e4d8bd77ccedbcd72d0a5dfbbf1f4603152aa4feb04fc853"
    "bacula_${FD_DEB_VERSION}.debian.tar.xz 0e41182703671ea6ebb8072928af694146e5949d74fa754b76c0dbfc9dbecd24"
    "bacula_${BACULA_VERSION}.orig.tar.gz 294afd3d2eb9d5b71c3d0e88fdf19eb513bfdb843b28d35c0552e4ae062827a1"
)
DEB_SRC_LINE='deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main'
# Host packages: Debian's build dependencies that decide what the FD's configure detects
# (so config.h matches), the packaging tools, and the Python pieces PyInstaller needs.
BUILD_DEPS=(build-essential dpkg-dev pkgconf binutils xz-utils debian-archive-keyring
            libssl-dev libwrap0-dev liblzo2-dev libacl1-dev libcap-dev zlib1g-dev
            libsqlite3-dev libreadline-dev python3 python3-venv)
# The admin's documentation shipped in /usr/share/doc/bacula-ec2-plugin/.
DOCS=("$REPO/README.md" "$REPO"/docs/{INSTALL,PARAMETERS,IAM,RESTORE,SNAPSHOTS,TROUBLESHOOTING,FORMAT}.md)
CACHE_ROOT=${BACULA_EC2_CACHE:-$HOME/.cache/bacula-ec2}
OUT=$REPO/dist
LINTIAN=1
VERSION=""
PY=${PYTHON:-}

while [[ $# -gt 0 ]]; do
    case $1 in
        --out) OUT=$2; shift 2 ;;
        --no-lintian) LINTIAN=0; shift ;;
        --version) VERSION=$2; shift 2 ;;
        --python) PY=$2; shift 2 ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        *) echo "build-deb: unknown argument: $1" >&2; exit 2 ;;
    esac
done

TOOL=build-deb
# shellcheck source=packaging/common.sh
source "$HERE/common.sh"
sha() { sha256sum | cut -c1-16; }

# Debian's own python3 when there is one (its libpython gets Debian's security updates).
if [[ -x /usr/bin/python3 ]]; then HOST_PY=/usr/bin/python3
else HOST_PY=$(command -v python3) || die "python3 not found"; fi
PY_MINOR=$("$HOST_PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
BUILD_DEPS+=("libpython$PY_MINOR")          # PyInstaller bundles the shared libpython
[[ $LINTIAN -eq 1 ]] && BUILD_DEPS+=(lintian)


src_files_ok() {
    local entry name sum
    for entry in "${SRC_FILES[@]}"; do
        read -r name sum <<<"$entry"
        [[ -f $1/$name ]] && echo "$sum  $1/$name" | sha256sum --check --status || return 1
    done
}

# Debian's source package, fetched (when missing) through a private apt state; the host's
# apt sources, lists and cache are not touched.
fetch_debian_source() {
    local dl="$CACHE_ROOT/downloads" apt_dir="$CACHE_ROOT/apt"
    src_files_ok "$dl" && return 0
    mkdir -p "$dl" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$CACHE_ROOT/logs"
    printf '%s\n' "$DEB_SRC_LINE" >"$apt_dir/sources.list"
    local apt_opts=(
        -o "Dir::Etc::SourceList=$apt_dir/sources.list"
        -o "Dir::Etc::SourceParts=/dev/null"
        -o "Dir::State::Lists=$apt_dir/lists"
        -o "Dir::Cache=$apt_dir/cache"
    )
    note "fetching Debian source package bacula=$FD_DEB_VERSION"
    run_logged "$CACHE_ROOT/logs/build-deb-source-update.log" apt-get "${apt_opts[@]}" update
    (cd "$dl" && run_logged "$CACHE_ROOT/logs/build-deb-source.log" \
        apt-get "${apt_opts[@]}" source --download-only "bacula=$FD_DEB_VERSION")
    src_files_ok "$dl" || die "Debian source package bacula $FD_DEB_VERSION in $dl: missing file or sha256 mismatch"
}

# Debian's tree: the orig tarball with debian/ and debian/patches applied (dpkg-source -x).
unpack_debian_source() {
    local dest="$CACHE_ROOT/debian-src/bacula-$FD_DEB_VERSION" tmp
    DEBIAN_TREE=$dest/bacula-$BACULA_VERSION
    [[ -f $dest/.complete ]] && return 0
    mkdir -p "$CACHE_ROOT/debian-src"
    exec 7>"$dest.lock"
    flock 7
    if [[ ! -f $dest/.complete ]]; then
        rm -rf "$dest"
        tmp=$(mktemp -d "$CACHE_ROOT/debian-src/.unpack.XXXXXX")
        note "dpkg-source -x bacula_$FD_DEB_VERSION.dsc"
        run_logged "$tmp.log" dpkg-source --no-copy -x "$CACHE_ROOT/downloads/bacula_$FD_DEB_VERSION.dsc" \
            "$tmp/bacula-$BACULA_VERSION"
        rm -f "$tmp.log"
        echo "dpkg-source -x bacula_$FD_DEB_VERSION.dsc, $(date -u +%FT%TZ)" >"$tmp/.complete"
        mv "$tmp" "$dest"
    fi
    exec 7>&-
}

# Debian's configure flags: packaging/debian/configure-flags plus the compiler flags of
# Debian 13's dpkg-buildflags with debian/rules' settings, as recorded in
# packaging/debian/buildflags-<arch> (-ffile-prefix-map only names the build directory and
# is left out, which keeps the cache key independent of it); an architecture without a
# recorded file gets this machine's dpkg-buildflags.
debian_configure_flags() {
    local gnu multiarch flags name value
    gnu=$(dpkg-architecture -qDEB_HOST_GNU_TYPE)
    multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
    flags=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' -e "s/@DEB_HOST_GNU_TYPE@/$gnu/" \
                -e "s/@DEB_HOST_MULTIARCH@/$multiarch/" "$DEB/configure-flags" | tr '\n' ' ')
    local recorded=$DEB/buildflags-$(dpkg --print-architecture)
    [[ -f $recorded ]] || note "no $recorded: using this machine's dpkg-buildflags (not Debian 13's)"
    for name in CFLAGS CXXFLAGS CPPFLAGS LDFLAGS; do
        if [[ -f $recorded ]]; then
            value=$(sed -n "s/^$name=//p" "$recorded")
            [[ -n $value ]] || die "$recorded has no $name= line"
        else
            value=$(cd / && env -u "$name" DEB_BUILD_MAINT_OPTIONS=hardening=+all \
                    DEB_LDFLAGS_MAINT_STRIP=-Wl,-Bsymbolic-functions dpkg-buildflags --get "$name" \
                    | sed -e 's/-ffile-prefix-map=[^ ]*//g' -e 's/  */ /g' -e 's/^ //' -e 's/ $//')
        fi
        [[ $value != *[\'\"\\]* ]] || die "dpkg-buildflags $name has a quote or backslash: $value"
        flags+=" '$name=$value'"
    done
    printf '%s' "$flags"
}

pyproject_version() {
    "$HOST_PY" - "$REPO/pyproject.toml" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print(tomllib.load(f)["project"]["version"])
EOF
}

# Hash of the files that make up the frozen backend.
backend_inputs_hash() {
    (cd "$REPO" && find bacula_ec2 protocol -name '*.py' -type f | LC_ALL=C sort \
        | while IFS= read -r f; do printf '%s\n' "$f"; sha256sum <"$f"; done
     cat pyproject.toml "$DEB/bundle-requirements.txt" "$DEB/bacula-ec2.spec" \
         "$DEB/ec2_backend_entry.py" "$DEB/bec2_entry.py"
     printf 'format=%s python=%s\n' "$FORMAT" "$("$HOST_PY" -VV)") | sha
}

# The PyInstaller venv: one per lock file and host Python.
venv_dir() {
    printf '%s/pyinstaller/venv-%s' "$CACHE_ROOT" "$( (cat "$DEB/bundle-requirements.txt"; "$HOST_PY" -VV) | sha)"
}

# ec2-backend and bec2 frozen with PyInstaller (cached); sets FROZEN to the one-dir tree.
build_frozen_backend() {
    local root="$CACHE_ROOT/pyinstaller" key venv dest tmp
    key=$(backend_inputs_hash)
    dest="$root/bacula-ec2-$key"
    FROZEN=$dest/dist/bacula-ec2
    [[ -f $dest/.complete ]] && return 0
    mkdir -p "$root"
    exec 6>"$dest.lock"
    flock 6
    if [[ ! -f $dest/.complete ]]; then
        venv=$(venv_dir)
        if [[ ! -f $venv/.complete ]]; then
            rm -rf "$venv"
            note "creating the PyInstaller venv $venv"
            "$HOST_PY" -m venv "$venv"
            run_logged "$root/pip.log" "$venv/bin/python" -m pip install --quiet --no-deps \
                -r "$DEB/bundle-requirements.txt"
            run_logged "$root/pip-check.log" "$venv/bin/python" -m pip check
            touch "$venv/.complete"
        fi
        # The bundle must satisfy pyproject.toml's dependencies (the lock can lag behind).
        "$venv/bin/python" - "$REPO/pyproject.toml" <<'EOF' || die "packaging/debian/bundle-requirements.txt does not satisfy pyproject.toml (update the lock)"
import sys, tomllib
from importlib.metadata import PackageNotFoundError, version
from packaging.requirements import Requirement
with open(sys.argv[1], "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
bad = []
for dep in deps:
    req = Requirement(dep)
    try:
        have = version(req.name)
    except PackageNotFoundError:
        bad.append(f"{req.name}: not in the bundle")
        continue
    if not req.specifier.contains(have, prereleases=True):
        bad.append(f"{req.name} {have} does not satisfy {dep}")
for line in bad:
    print("build-deb:", line, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
        rm -rf "$dest"
        tmp=$(mktemp -d "$root/.build.XXXXXX")
        note "PyInstaller: ec2-backend and bec2 (log: $tmp/pyinstaller.log)"
        (cd "$tmp" && run_logged "$tmp/pyinstaller.log" env BACULA_EC2_REPO="$REPO" \
            PYTHONDONTWRITEBYTECODE=1 "$venv/bin/pyinstaller" --noconfirm --clean \
            --distpath "$tmp/dist" --workpath "$tmp/work" "$DEB/bacula-ec2.spec")
        rm -rf "$tmp/work"
        # Smoke test: both start, know their version, and ec2-backend ends cleanly on EOF.
        local want got
        want=$("$HOST_PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); import bacula_ec2; print(bacula_ec2.__version__)' "$REPO")
        got=$("$tmp/dist/bacula-ec2/bec2" --version) || die "frozen bec2 --version failed"
        [[ $got == "bec2 $want" ]] || die "frozen bec2 --version printed '$got', expected 'bec2 $want'"
        "$tmp/dist/bacula-ec2/ec2-backend" </dev/null >/dev/null 2>&1 \
            || die "frozen ec2-backend did not exit 0 on an empty stdin"
        "$venv/bin/python" -m pip freeze --all --exclude-editable >"$tmp/bundle-freeze.txt"
        echo "PyInstaller build $(date -u +%FT%TZ), $("$HOST_PY" -V)" >"$tmp/.complete"
        mv "$tmp" "$dest"
    fi
    exec 6>&-
}

# Depends: the exact bacula-fd build the .so was compiled for, and the Debian packages of
# the shared libraries that the staged ELF files need (dpkg-shlibdeps over all of them).
# Debian 13 renamed libssl3 to libssl3t64 (same soname): either satisfies the bundle.
compute_depends() {
    local stage=$1 tmp shl f elves=()
    while IFS= read -r -d '' f; do
        if [[ $(head -c 4 "$f" | od -An -c | tr -d ' ') == 177ELF ]]; then elves+=(-e "$f"); fi
    done < <(find "$stage/usr" -type f -print0 | LC_ALL=C sort -z)
    [[ ${#elves[@]} -gt 0 ]] || die "no ELF file in $stage"
    tmp=$(mktemp -d)
    mkdir -p "$tmp/debian"
    printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$PKG" "$PKG" >"$tmp/debian/control"
    if ! shl=$(cd "$tmp" && dpkg-shlibdeps -O "${elves[@]}" 2>"$tmp/shlibdeps.err"); then
        cat "$tmp/shlibdeps.err" >&2
        rm -rf "$tmp"
        die "dpkg-shlibdeps failed on the staged files"
    fi
    rm -rf "$tmp"
    shl=$(sed -n 's/^shlibs:Depends=//p' <<<"$shl")
    [[ $shl == *libc6* ]] || die "dpkg-shlibdeps found no libc6 dependency: '$shl'"
    shl=$(sed -E 's/libssl3 (\([^)]*\))/libssl3t64 \1 | libssl3 \1/' <<<"$shl")
    printf 'bacula-fd (= %s), %s' "$FD_DEB_VERSION" "$shl"
}

gz() { gzip -9n <"$1" >"$2"; chmod 0644 "$2"; }

# Keep the cache from growing with every source change: of the entries DIR/PREFIX*, keep
# the KEEP most recently used (the one just used among them), remove the others.
prune_cache() {
    local dir=$1 prefix=$2 keep=$3 used=$4 entry n=0
    touch "$used"
    while IFS= read -r entry; do
        n=$((n + 1))
        [[ $n -le $keep || $entry -ef $used ]] && continue
        rm -rf "$entry" "$entry.lock"
    done < <(find "$dir" -mindepth 1 -maxdepth 1 -type d -name "$prefix*" ! -name '.*' -printf '%T@ %p\n' \
             | sort -rn | cut -d' ' -f2-)
}

stage_package() {
    local stage=$1 so=$2 frozen=$3 version=$4 depends arch size doc f
    arch=$(dpkg --print-architecture)
    doc=$stage/usr/share/doc/$PKG
    install -d -m 0755 "$stage/DEBIAN" "$stage/usr/lib/bacula" "$stage/usr/sbin" "$stage/usr/bin" \
        "$doc" "$stage/usr/share/man/man1" "$stage/usr/share/man/man8" \
        "$stage/usr/share/lintian/overrides"
    # ec2-fd.so, stripped as dh_strip does.
    install -m 0644 "$so" "$stage/usr/lib/bacula/ec2-fd.so"
    strip --remove-section=.comment --remove-section=.note --strip-unneeded \
        "$stage/usr/lib/bacula/ec2-fd.so"
    # The frozen backend: directories 0755, files 0644, the two executables 0755. Not
    # stripped: a PyInstaller executable carries its archive after the ELF sections.
    cp -a "$frozen" "$stage/usr/lib/bacula-ec2"
    find "$stage/usr/lib/bacula-ec2" -type d -exec chmod 0755 {} +
    find "$stage/usr/lib/bacula-ec2" -type f -exec chmod 0644 {} +
    chmod 0755 "$stage/usr/lib/bacula-ec2/ec2-backend" "$stage/usr/lib/bacula-ec2/bec2"
    # Its shared objects (CPython's extension modules, compiled wheels such as dissect.util's
    # Rust extension) stripped as dh_strip strips them; the executables are left alone.
    find "$stage/usr/lib/bacula-ec2/_internal" -type f -name '*.so*' \
        -exec strip --remove-section=.comment --remove-section=.note --strip-unneeded {} +
    ln -s ../lib/bacula-ec2/ec2-backend "$stage/usr/sbin/ec2-backend"
    ln -s ../lib/bacula-ec2/bec2 "$stage/usr/bin/bec2"
    # Docs (gzipped above 4 KiB, Debian policy 12.3), man pages, changelog, copyright.
    install -m 0644 "$DEB/copyright" "$doc/copyright"
    for f in "${DOCS[@]}"; do
        [[ -f $f ]] || continue
        if [[ $(stat -c %s "$f") -gt 4096 ]]; then gz "$f" "$doc/$(basename "$f").gz"
        else install -m 0644 "$f" "$doc/$(basename "$f")"; fi
    done
    { echo "Built by packaging/build-deb.sh (bacula-ec2 $version)."
      echo
      echo "/usr/lib/bacula/ec2-fd.so: Debian source package bacula $FD_DEB_VERSION, configured with:"
      sed -n '2,$p' "$(dirname "$(dirname "$(dirname "$so")")")/.complete"
      echo
      echo "/usr/lib/bacula-ec2: PyInstaller one-dir build, $("$HOST_PY" -V), with:"
      sed 's/^/  /' "$(dirname "$(dirname "$frozen")")/bundle-freeze.txt"
    } >"$doc/BUILDINFO"
    chmod 0644 "$doc/BUILDINFO"
    changelog_for "$version" | gzip -9n >"$doc/changelog.gz"
    chmod 0644 "$doc/changelog.gz"
    gz "$DEB/ec2-backend.8" "$stage/usr/share/man/man8/ec2-backend.8.gz"
    gz "$DEB/bec2.1" "$stage/usr/share/man/man1/bec2.1.gz"
    install -m 0644 "$DEB/lintian-overrides" "$stage/usr/share/lintian/overrides/$PKG"
    install -d -m 0755 "$stage/etc/logrotate.d"
    install -m 0644 "$DEB/logrotate" "$stage/etc/logrotate.d/$PKG"
    echo "/etc/logrotate.d/$PKG" >"$stage/DEBIAN/conffiles"
    install -m 0755 "$DEB/postinst" "$stage/DEBIAN/postinst"
    depends=$(compute_depends "$stage")
    size=$(du -sk --apparent-size --exclude=DEBIAN "$stage" | cut -f1)
    sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@DEPENDS@/$depends/" \
        -e "s/@INSTALLED_SIZE@/$size/" -e "s/@FD_DEB_VERSION@/$FD_DEB_VERSION/" \
        "$DEB/control.in" >"$stage/DEBIAN/control"
    (cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
        | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
    chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/md5sums" "$stage/DEBIAN/conffiles"
}

# packaging/debian/changelog, with a generated entry on top when --version asks for
# another version than the changelog's.
changelog_for() {
    local version=$1 top
    top=$(sed -n '1s/^[^ ]* (\([^)]*\)).*/\1/p' "$DEB/changelog")
    if [[ $version != "$top" ]]; then
        printf '%s (%s) trixie; urgency=medium\n\n  * Test build (build-deb.sh --version).\n\n -- %s  %s\n\n' \
            "$PKG" "$version" "$(sed -n 's/^ -- \(.*>\)  .*/\1/p' "$DEB/changelog" | head -n 1)" \
            "$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
    fi
    cat "$DEB/changelog"
}

# ---------------------------------------------------------------------------------------
ensure_build_deps "$CACHE_ROOT/logs/build-deb-apt.log"
PKG_VERSION=$(pyproject_version)
CHANGELOG_VERSION=$(sed -n '1s/^[^ ]* (\([^)]*\)).*/\1/p' "$DEB/changelog")
[[ $CHANGELOG_VERSION == "$PKG_VERSION" ]] \
    || die "packaging/debian/changelog's top entry is $CHANGELOG_VERSION, pyproject.toml says $PKG_VERSION: add a changelog entry"
VERSION=${VERSION:-$PKG_VERSION}
[[ $VERSION =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || die "--version $VERSION: not a native Debian version"
# Reproducible timestamps: the date of the changelog's top entry.
SOURCE_DATE_EPOCH=$(date -d "$(sed -n 's/^ -- .*>  //p' "$DEB/changelog" | head -n 1)" +%s)
export SOURCE_DATE_EPOCH

fetch_debian_source
unpack_debian_source
if [[ -z $PY ]]; then
    if [[ -x $REPO/.venv/bin/python ]]; then PY=$REPO/.venv/bin/python; else PY=$HOST_PY; fi
fi
SO=$(bash "$HERE/build-plugin.sh" --python "$PY" --bacula-src "$DEBIAN_TREE" \
     --configure-flags "$(debian_configure_flags)" | tail -n 1)
build_frozen_backend

ARCH=$(dpkg --print-architecture)
NAME="${PKG}_${VERSION}_${ARCH}.deb"
DEB_KEY=$( { printf 'format=%s version=%s arch=%s\n' "$FORMAT" "$VERSION" "$ARCH"
             sha256sum <"$SO"; echo "$FROZEN"
             cat "$0" "$DEB"/{control.in,copyright,changelog,postinst,lintian-overrides,logrotate,ec2-backend.8,bec2.1}
             cat "$DEB"/buildflags-* 2>/dev/null
             for f in "${DOCS[@]}"; do [[ -f $f ]] && { echo "$f"; cat "$f"; }; done
           } | sha)
CACHED="$CACHE_ROOT/deb/$DEB_KEY"
if [[ ! -f $CACHED/.complete || ( $LINTIAN -eq 1 && ! -f $CACHED/lintian.txt ) ]]; then
    rm -rf "$CACHED"
    mkdir -p "$CACHE_ROOT/deb"
    WORK=$(mktemp -d "$CACHE_ROOT/deb/.build.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
    stage_package "$WORK/root" "$SO" "$FROZEN" "$VERSION"
    note "dpkg-deb --build $NAME"
    run_logged "$WORK/dpkg-deb.log" dpkg-deb --root-owner-group -Zxz --build "$WORK/root" "$WORK/$NAME"
    if [[ $LINTIAN -eq 1 ]]; then
        note "lintian $NAME"
        # lintian exits non-zero on errors (--fail-on error); the report is kept either way.
        lintian_rc=0
        lintian --fail-on error --display-info --pedantic "$WORK/$NAME" >"$WORK/lintian.txt" 2>&1 \
            || lintian_rc=$?
        if [[ $lintian_rc -ne 0 ]]; then
            cat "$WORK/lintian.txt" >&2
            die "lintian reported errors for $NAME (exit $lintian_rc)"
        fi
    fi
    rm -rf "$WORK/root"
    touch "$WORK/.complete"
    mv "$WORK" "$CACHED"
    trap - EXIT
fi
prune_cache "$CACHE_ROOT/pyinstaller" bacula-ec2- 2 "$(dirname "$(dirname "$FROZEN")")"
prune_cache "$CACHE_ROOT/pyinstaller" venv- 2 "$(venv_dir)"
prune_cache "$CACHE_ROOT/deb" "" 3 "$CACHED"
mkdir -p "$OUT"
install -m 0644 "$CACHED/$NAME" "$OUT/$NAME"
if [[ $LINTIAN -eq 1 ]]; then
    install -m 0644 "$CACHED/lintian.txt" "$OUT/${NAME%.deb}.lintian.txt"
    note "lintian: $(grep -c '^E:' "$CACHED/lintian.txt") errors, $(grep -c '^W:' "$CACHED/lintian.txt") warnings, $(grep -c '^[IP]:' "$CACHED/lintian.txt") info/pedantic tags (all in $OUT/${NAME%.deb}.lintian.txt)"
    grep '^[EW]:' "$CACHED/lintian.txt" >&2 || true
fi
echo "$(cd "$OUT" && pwd)/$NAME"
