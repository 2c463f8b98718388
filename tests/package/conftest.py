"""Fixtures for the packaged-FD tests (``make test-package``; not part of ``make test``).

``trixie_root``: a fresh Debian 13 root with Debian's own bacula-fd 15.0.3-3, unpacked from
the cache of ``packaging/trixie-root.sh`` (built there once, about 30 s; unpacking about 1 s).
``packaged_root``: the same root after ``apt-get install /tmp/<the .deb>`` inside it.
``root_stack``: the project's Director and SD (outside) with the root's
``/usr/sbin/bacula-fd`` run through ``in-root.sh`` (chroot + private mount namespace).
``next_release``: the .deb of the *next* release (N+1), built by ``packaging/build-deb.sh``
from a copy of this tree whose version is bumped everywhere a release carries it (its
ec2-fd.so, ec2-backend and bec2 all report N+1): the upgrade and the version handshake.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devkit.harness import BaculaBuild, BaculaStack

REPO = Path(__file__).resolve().parents[2]
IN_ROOT = Path(__file__).with_name("in-root.sh")
TRIXIE_ROOT_SH = REPO / "packaging" / "trixie-root.sh"
FD = "/usr/sbin/bacula-fd"

#: Environment variable: the .deb to test (default: dist/bacula-ec2-plugin_<version>_*.deb).
DEB_ENV = "BACULA_EC2_DEB"
#: The files a release's version lives in (build-deb.sh refuses a changelog that disagrees).
VERSION_FILES = ("pyproject.toml", "bacula_ec2/__init__.py")


def project_version() -> str:
    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


def find_deb() -> Path:
    """The package to install: $BACULA_EC2_DEB, else the one `make package` built."""
    if os.environ.get(DEB_ENV):
        deb = Path(os.environ[DEB_ENV])
        if not deb.is_file():
            pytest.fail(f"{DEB_ENV}={deb} is not a file", pytrace=False)
        return deb
    found = sorted((REPO / "dist").glob(f"bacula-ec2-plugin_{project_version()}_*.deb"))
    if len(found) != 1:
        pytest.fail(
            f"expected one dist/bacula-ec2-plugin_{project_version()}_<arch>.deb, found "
            f"{[p.name for p in found]}: run `make package` (or set {DEB_ENV})",
            pytrace=False,
        )
    return found[0]


@dataclass
class TrixieRoot:
    """An unpacked root and what trixie-root.sh checked in it (its .info file)."""

    path: Path
    info: dict[str, str]
    log: list[str] = field(default_factory=list)

    def run(self, *argv: str, bind: Path | None = None, check: bool = True, timeout: float = 300) -> str:
        """Run argv inside the root (through in-root.sh); return stdout+stderr."""
        proc = subprocess.run(
            [str(IN_ROOT), str(self.path), str(bind) if bind else "-", *argv],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            errors="replace",
        )
        out = proc.stdout + proc.stderr
        self.log.append(f"$ {' '.join(argv)}  (exit {proc.returncode})\n{out}")
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} in {self.path} exited {proc.returncode}:\n{out}")
        return out

    def fd_command(self, bind: Path, env: dict[str, str] | None = None, fd: str = FD) -> list[str]:
        """The argv that runs the root's bacula-fd (``fd``) seeing ``bind`` at its own path."""
        assigns = [f"{k}={v}" for k, v in (env or {}).items()]
        return [str(IN_ROOT), str(self.path), str(bind), *assigns, fd]


def doc_block(marker: str) -> str:
    """The shell block of docs/INSTALL.md right after the doc-test comment naming ``marker``
    (the package tests run the document's commands as written)."""
    text = (REPO / "docs" / "INSTALL.md").read_text()
    pattern = rf"<!-- doc-test: skip \([^)]*{re.escape(marker)}[^)]*\) -->\n```sh\n(.*?)```"
    found = re.search(pattern, text, re.S)
    assert found, f"docs/INSTALL.md has no block marked with {marker!r}"
    return found.group(1)


def without_systemctl(block: str) -> str:
    """A root has no init: the block's `systemctl ...` lines (FD restarts) are left out."""
    return "\n".join(line for line in block.splitlines() if not line.startswith("systemctl "))


def _read_info(tarball: Path) -> dict[str, str]:
    info = tarball.with_name(tarball.name.replace(".tar.zst", ".info"))
    pairs = (line.split("=", 1) for line in info.read_text().splitlines() if "=" in line)
    return {k: v for k, v in pairs}


def _unpack(dest: Path) -> TrixieRoot:
    proc = subprocess.run(
        ["bash", str(TRIXIE_ROOT_SH), "--unpack", str(dest)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"packaging/trixie-root.sh failed:\n{proc.stderr}{proc.stdout}", pytrace=False)
    tarball = subprocess.run(
        ["bash", str(TRIXIE_ROOT_SH)], capture_output=True, text=True, check=True
    ).stdout.splitlines()[-1]
    return TrixieRoot(dest, _read_info(Path(tarball)))


def _remove_root(root: Path) -> None:
    # in-root.sh mounts only in private namespaces; refuse to delete through a mount anyway.
    mounts = Path("/proc/self/mountinfo").read_text()
    if re.search(rf" {re.escape(str(root))}/", mounts):
        raise AssertionError(f"something is mounted under {root}; not deleting it")
    shutil.rmtree(root)


@pytest.fixture(scope="module")
def trixie_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrixieRoot]:
    """A fresh trixie root for one test module, deleted afterwards."""
    dest = tmp_path_factory.mktemp("trixie") / "root"
    root = _unpack(dest)
    yield root
    _remove_root(dest)


def apt_install(root: TrixieRoot, deb: Path) -> str:
    """``apt-get install -y /tmp/<deb>`` inside the root, as an admin installs it: apt takes
    the distribution packages the .deb depends on from deb.debian.org (the cached root has
    no package lists, so ``apt-get update`` runs first; that needs the network)."""
    shutil.copy2(deb, root.path / "tmp" / deb.name)
    root.run("/usr/bin/apt-get", "update")
    return root.run("/usr/bin/apt-get", "install", "-y", f"/tmp/{deb.name}")


@pytest.fixture(scope="module")
def packaged_root(trixie_root: TrixieRoot) -> TrixieRoot:
    """The root with the project's .deb installed by apt, as an admin does it."""
    apt_install(trixie_root, find_deb())
    return trixie_root


@pytest.fixture
def root_stack(bacula_build: BaculaBuild, tmp_path: Path) -> Iterator[Any]:
    """Factory: ``make(root, plugin_commands, **kw)`` -> a started stack whose FD is the
    root's packaged bacula-fd, stopped at teardown. The FD sees ``tmp_path`` (the stack's
    directory, restore targets) at its own path; its plugin directory is Debian's."""
    stacks: list[BaculaStack] = []

    def make(root: TrixieRoot, plugin_commands: Sequence[str], **kw: Any) -> BaculaStack:
        kw.setdefault("prefix", bacula_build.prefix)
        kw.setdefault("fd_command", root.fd_command(tmp_path, kw.pop("fd_env_in_root", None)))
        kw.setdefault("fd_plugin_dir", root.info["plugin_dir"])
        stack = BaculaStack(tmp_path / f"bacula-{len(stacks)}", plugin_commands, **kw)
        stacks.append(stack)
        return stack.start()

    yield make
    for stack in stacks:
        stack.stop()


@dataclass(frozen=True)
class Release:
    version: str
    deb: Path


def bumped(version: str) -> str:
    """0.1.0 -> 0.1.1: the next release's version (its last number plus one)."""
    head, _, last = version.rpartition(".")
    return f"{head}.{int(last) + 1}"


@pytest.fixture(scope="session")
def next_release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    """Release N+1 as its own .deb: the tracked and new files of this tree copied, the version
    bumped in pyproject.toml, bacula_ec2/__init__.py and on top of packaging/debian/changelog,
    then ``build-deb.sh`` (PyInstaller and the .so rebuilt for it: about a minute)."""
    current = project_version()
    nxt = bumped(current)
    tree = tmp_path_factory.mktemp("next-release") / "tree"
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file() and not src.is_symlink():
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, tree / rel)
    for rel in VERSION_FILES:
        path = tree / rel
        text = path.read_text()
        assert f'"{current}"' in text, f"{rel} does not carry the version {current}"
        path.write_text(text.replace(f'"{current}"', f'"{nxt}"', 1))
    changelog = tree / "packaging/debian/changelog"
    signer = re.search(r"^ -- (.*>)  ", changelog.read_text(), re.M)
    assert signer, "packaging/debian/changelog has no signature line"
    changelog.write_text(
        f"bacula-ec2-plugin ({nxt}) trixie; urgency=medium\n\n  * The next release (test build).\n\n"
        f" -- {signer.group(1)}  Wed, 02 Dec 2026 12:00:00 +0000\n\n" + changelog.read_text()
    )
    out = tree / "dist"
    proc = subprocess.run(
        ["bash", str(tree / "packaging/build-deb.sh"), "--out", str(out), "--no-lintian",
         "--python", str(REPO / ".venv/bin/python")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"building release {nxt} failed:\n{proc.stderr}{proc.stdout}", pytrace=False)
    deb = Path(proc.stdout.strip().splitlines()[-1])
    assert deb.name.startswith(f"bacula-ec2-plugin_{nxt}_"), deb
    return Release(nxt, deb)


def full_restored_exactly(stack: BaculaStack, sim: Any, release: str, where: Path, iid: str, vid: str,
                          image_name: str) -> None:  # fmt: skip
    """`status client` lists ec2(<release>); a Full ends OK with no warning; restored into
    ``where``, the image ``image_name`` of instance ``iid`` holds volume ``vid``'s bytes."""
    from devkit.helpers import sha256_file

    status = stack.status_client()
    assert re.search(rf"\bec2\({re.escape(release)}\)", status), status
    jobid = stack.run_job(level="Full", timeout=180)
    log = stack.job_log(jobid)
    assert stack.job_status(jobid) == "T" and "with warnings" not in log, log + stack.logs()
    rjobid, rstatus = stack.restore(jobid, where=where)
    assert rstatus == "T", stack.job_log(rjobid) + stack.logs()
    assert sha256_file(where / "@amazon-ec2" / iid / image_name) == sim.client.volume_sha256(vid)
