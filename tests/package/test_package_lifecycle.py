"""The .deb's life on a Debian 13 host with Debian's bacula-fd: `apt install ./…deb`, an upgrade
to the next release over it, and `apt remove` / `apt purge`, each checked on the files dpkg
knows about and on the disk (a root of its own: this module's `trixie_root`). Install, upgrade
and remove are docs/INSTALL.md's own blocks, run as written (but for `systemctl`), with apt
answering yes as the admin would at its prompt."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .conftest import Release, TrixieRoot, doc_block, find_deb, project_version, without_systemctl

PACKAGE = "bacula-ec2-plugin"
#: What the issue asks the package to put at Debian's paths.
REQUIRED = ("/usr/lib/bacula/ec2-fd.so", "/usr/sbin/ec2-backend", "/usr/bin/bec2")


def _status(root: TrixieRoot, package: str) -> str:
    out = root.run("/usr/bin/dpkg-query", "-W", "-f=${Version} ${db:Status-Abbrev}", package, check=False)
    return out.strip()


def _owned(root: TrixieRoot) -> list[str]:
    return root.run("/usr/bin/dpkg-query", "-L", PACKAGE).split()


def _deb_version(deb: Path) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True
    ).stdout.strip()


def _doc_step(root: TrixieRoot, step: str, deb: Path | None = None, name: str = "") -> str:
    """Run INSTALL.md's block for ``step`` in the root's /tmp, apt answering yes; ``deb`` is
    copied there and put in place of ``name``, the file name the block shows (as an admin
    types the name of the file they have)."""
    marker = f"test_package_lifecycle.py in a Debian 13 root, systemctl left out: {step}"
    block = without_systemctl(doc_block(marker))
    if deb is not None:
        assert f"./{name}" in block, (name, block)
        block = block.replace(name, deb.name)
        shutil.copy2(deb, root.path / "tmp" / deb.name)
    (root.path / "tmp/assume-yes.conf").write_text('APT::Get::Assume-Yes "true";\n')
    return root.run("APT_CONFIG=/tmp/assume-yes.conf", "/bin/sh", "-ec", f"cd /tmp\n{block}")


def test_install_upgrade_remove_purge(trixie_root: TrixieRoot, next_release: Release) -> None:
    root = trixie_root
    first = find_deb()
    version = _deb_version(first)
    assert version == project_version()

    root.run("/usr/bin/apt-get", "update")  # the cached root has no package lists
    _doc_step(root, "install", first, "bacula-ec2-plugin_0.1.0_amd64.deb")
    assert _status(root, PACKAGE).startswith(f"{version} ii"), _status(root, PACKAGE)
    owned = _owned(root)
    for path in REQUIRED:
        assert path in owned, (path, owned)
        assert (root.path / path.lstrip("/")).exists(), path
    assert root.run("/usr/bin/bec2", "--version").strip() == f"bec2 {version}"

    assert root.run("/usr/sbin/ec2-backend", "--version").strip() == f"ec2-backend {version}"

    # Release N+1 over N: apt upgrades in place; every file on disk under the package's own
    # tree belongs to the new version (nothing stale left from N), and all three programs
    # now report N+1 (the .so carries it in its Hello, see test_packaged_fd).
    shown = next_release.deb.name.replace(next_release.version, "<new version>")
    out = _doc_step(root, "upgrade", next_release.deb, shown)
    assert f"over ({version})" in out, out
    assert _status(root, PACKAGE).startswith(f"{next_release.version} ii"), _status(root, PACKAGE)
    owned = set(_owned(root))
    tree = root.path / "usr/lib/bacula-ec2"
    on_disk = {"/" + str(p.relative_to(root.path)) for p in tree.rglob("*")}
    assert on_disk <= owned, sorted(on_disk - owned)[:20]
    assert root.run("/usr/bin/bec2", "--version").strip() == f"bec2 {next_release.version}"
    assert root.run("/usr/sbin/ec2-backend", "--version").strip() == f"ec2-backend {next_release.version}"
    so = (root.path / "usr/lib/bacula/ec2-fd.so").read_bytes()
    assert f"1/{next_release.version}".encode() in so and f"1/{version}\0".encode() not in so

    # remove, then purge: the package's files go, Debian's bacula-fd and its plugins stay.
    def present(path: str) -> bool:
        return os.path.lexists(root.path / path.lstrip("/"))

    files = [p for p in owned if present(p) and not (root.path / p.lstrip("/")).is_dir()]
    assert len(files) > 100, files  # the frozen tree's files, the .so, links, docs
    _doc_step(root, "remove")
    for path in (*REQUIRED, "/usr/lib/bacula-ec2"):
        assert not present(path), f"{path} left after apt remove"
    # Left now at most its conffiles (a package without any is gone already; dpkg only warns).
    root.run("/usr/bin/dpkg", "--purge", PACKAGE)
    left = [p for p in files if present(p)]
    assert not left, f"left after purge: {left}"
    gone = _status(root, PACKAGE)
    assert "no packages found" in gone or gone.split()[-1].startswith("un"), gone
    assert _status(root, "bacula-fd") == "15.0.3-3 ii", _status(root, "bacula-fd")
    assert (root.path / "usr/lib/bacula/bpipe-fd.so").is_file()
    assert not (root.path / "usr/share/doc" / PACKAGE).exists()
