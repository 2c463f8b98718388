"""Is the package's ec2-fd.so configured as Debian 13 configures its own bacula-fd?

`make package` runs on this machine (Debian 12), not on Debian 13. Here Debian's source tree
is configured a second time inside a Debian 13 root, with the Build-Depends of its
debian/control and the exact flags the package records in its BUILDINFO, and the two
`config.h` are compared: a define that differs must be one that no file of the Bacula
source reads. The compiler flags the package uses (packaging/debian/buildflags-<arch>) must
be what that root's dpkg-buildflags prints with debian/rules' settings.
"""

from __future__ import annotations

import gzip
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from .conftest import REPO, TrixieRoot, find_deb

#: Build-Depends left out, each for the configure flags build-deb.sh drops or for being a
#: packaging tool that configure never looks at (docs/INSTALL.md, "How it is built").
NOT_NEEDED = {
    "default-libmysqlclient-dev": "--with-mysql is left out",
    "libpq-dev": "--with-postgresql is left out",
    "postgresql-server-dev-all": "--with-postgresql is left out",
    "qtbase5-dev": "--enable-bat is left out",
    "debhelper-compat": "packaging tool",
    "dh-exec": "packaging tool",
    "po-debconf": "packaging tool",
    "autoconf": "configure is not regenerated",
}


def _defines(config_h: Path) -> dict[str, str]:
    found = re.findall(r"^#define (\w+)(?: (.*))?$", config_h.read_text(errors="replace"), re.M)
    return {name: value for name, value in found}


def _build_depends(control: Path) -> list[str]:
    text = control.read_text()
    block = re.search(r"^Build-Depends:(.*?)^\S", text, re.S | re.M)
    assert block, control
    names = []
    for item in block.group(1).split(","):
        name = re.sub(r"\s*(\(.*?\)|\[.*?\])", "", item).strip()
        if name and name not in NOT_NEEDED:
            names.append(name)
    return names


def _buildinfo_flags(deb: Path, dest: Path) -> list[str]:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    info = next((dest / "usr/share/doc/bacula-ec2-plugin").glob("BUILDINFO*"))
    raw = info.read_bytes()
    text = gzip.decompress(raw).decode() if info.suffix == ".gz" else raw.decode()
    block = text.split("configured with:\n", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip()]


def _host_tree(debian_tree: Path, flags: list[str]) -> Path:
    """The configured copy build-deb.sh compiled the .so in (build-plugin.sh's cache, keyed
    by the flags: the same words give the same tree)."""
    proc = subprocess.run(
        ["bash", str(REPO / "packaging/build-plugin.sh"), "--python", str(REPO / ".venv/bin/python"),
         "--bacula-src", str(debian_tree), "--configure-flags", shlex.join(flags)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.strip().splitlines()[-1]).parents[2] / "src"


def test_config_h_and_compiler_flags_match_a_debian_13_build(trixie_root: TrixieRoot, tmp_path: Path) -> None:
    root = trixie_root
    cache = Path.home() / ".cache/bacula-ec2/debian-src"
    trees = sorted(cache.glob("bacula-15.0.3-3/bacula-15.0.3"))
    assert trees, f"no Debian source tree in {cache}: run make package"
    debian_tree = trees[0]
    flags = _buildinfo_flags(find_deb(), tmp_path / "deb")
    assert any(f.startswith("--with-working-dir=") for f in flags), flags

    # Debian 13's compiler flags, as debian/rules asks dpkg-buildflags for them.
    root.run("/usr/bin/apt-get", "update")
    deps = _build_depends(debian_tree / "debian/control")
    root.run(
        "/usr/bin/apt-get", "install", "-y", "--no-install-recommends", "build-essential", "dpkg-dev", *deps
    )
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    recorded = dict(
        line.split("=", 1)
        for line in (REPO / f"packaging/debian/buildflags-{arch}").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for name, value in recorded.items():
        env = "DEB_BUILD_MAINT_OPTIONS=hardening=+all DEB_LDFLAGS_MAINT_STRIP=-Wl,-Bsymbolic-functions"
        got = root.run("/bin/sh", "-c", f"cd / && {env} dpkg-buildflags --get {name}")
        got = " ".join(w for w in got.split() if not w.startswith("-ffile-prefix-map="))
        assert got == value, f"{name}: Debian 13 says {got!r}, packaging/debian/buildflags-{arch} {value!r}"
        assert f"{name}={value}" in flags, f"the package was not built with {name}={value}"

    # The same tree, configured in the root with the package's own flags.
    shutil.copytree(debian_tree, root.path / "tmp/src", symlinks=True)
    (root.path / "tmp/flags").write_bytes(b"".join(f.encode() + b"\0" for f in flags))
    root.run(
        "/bin/bash", "-ec", "cd /tmp/src && xargs -0 -a /tmp/flags ./configure > /tmp/configure.log 2>&1"
    )
    ours = _defines(_host_tree(debian_tree, flags) / "src/config.h")
    debians = _defines(root.path / "tmp/src/src/config.h")
    differing = sorted(set(ours.items()) ^ set(debians.items()))
    names = {name for name, _ in differing}
    readers = subprocess.run(
        ["grep", "-rlwE", "|".join(names) or "^$", "--include=*.[ch]", "--include=*.cpp", "--include=*.cc",
         "--include=*.in", str(debian_tree / "src")],
        capture_output=True, text=True, check=False,
    ).stdout.split() if names else []  # fmt: skip
    readers = [r for r in readers if not r.endswith("config.h.in")]
    assert not readers, (
        f"config.h differs from Debian 13's in {differing}, and these files read it: {readers}"
    )
    assert len(ours) > 200 and len(differing) < 5, differing
