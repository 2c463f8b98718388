"""The layering of the repository's top-level packages, read from the import statements:

- the product (`bacula_ec2`, `protocol`) never imports the dev kit (`devkit`) nor tests;
- `devkit` and `bench` never import `tests`; `tests` never imports `bench`;
- nothing imports `tests` by its absolute name, and no test module imports another test
  module (what tests share lives in `devkit` or in a non-test helper module of `tests`);
- no code outside `tests` runs a `tests.` module by name (``python -m tests.x``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("bacula_ec2", "protocol", "devkit", "bench", "tests")
FORBIDDEN = {
    "bacula_ec2": {"tests", "devkit", "bench"},
    "protocol": {"tests", "devkit", "bench"},
    "devkit": {"tests", "bench"},
    "bench": {"tests"},
    "tests": {"bench"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(source: str, module: str, is_package: bool) -> Iterator[tuple[int, str, bool]]:
    """(line, imported module, written as a relative import) for every import in `source`;
    `from X import a` yields `X` and `X.a` (a may be a submodule)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, False
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield node.lineno, target, bool(node.level)
            for alias in node.names:
                yield node.lineno, f"{target}.{alias.name}" if target else alias.name, bool(node.level)


def violations(path: Path, source: str) -> list[str]:
    module = module_name(path)
    top = module.split(".")[0]
    found = []
    where = path.relative_to(REPO)
    for line, target, relative in imports(source, module, path.name == "__init__.py"):
        head = target.split(".")[0]
        if head in FORBIDDEN.get(top, set()):
            found.append(f"{where}:{line}: {top} must not import {target}")
        if head == "tests" and not relative:
            found.append(f"{where}:{line}: imports {target} by its absolute name")
        if path.name.startswith("test_") and target.split(".")[-1].startswith("test_"):
            found.append(f"{where}:{line}: a test module imports the test module {target}")
    if top != "tests":
        for node in ast.walk(ast.parse(source)):
            text = node.value if isinstance(node, ast.Constant) else None
            if isinstance(text, str) and (text.startswith("tests.") or " -m tests." in text):
                found.append(f"{where}:{node.lineno}: names the module {text!r}")
    return found


def sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def test_every_package_is_scanned() -> None:
    tops = {module_name(p).split(".")[0] for p in sources()}
    assert tops == set(PACKAGES)
    assert len(sources()) > 50


def test_no_package_imports_what_it_must_not() -> None:
    found = [v for path in sources() for v in violations(path, path.read_text())]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("path", "source", "culprit"),
    [
        ("bacula_ec2/jobs/x.py", "from devkit.simulator import World\n", "must not import devkit"),
        ("protocol/x.py", "import devkit.fdpeer\n", "must not import devkit"),
        ("protocol/x.py", "from .. import tests\n", "must not import tests"),
        ("devkit/x.py", "from tests.helpers import sha256_file\n", "must not import tests"),
        ("bench/x.py", "import tests.backend.driver as d\n", "must not import tests"),
        ("tests/x.py", "from bench.backup import main\n", "must not import bench"),
        ("tests/e2e/test_x.py", "from .test_full_backup_restore import BLOCK\n", "the test module"),
        ("tests/e2e/test_x.py", "from . import test_chains\n", "the test module"),
        ("tests/test_x.py", "from tests.common import BLOCK\n", "absolute name"),
        ("bench/x.py", "cmd = [sys.executable, '-m', 'tests.simulator']\n", "names the module"),
    ],
)
def test_the_scanner_catches_each_kind_of_violation(path: str, source: str, culprit: str) -> None:
    found = violations(REPO / path, source)
    assert any(culprit in v for v in found), found


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("tests/e2e/test_x.py", "from .common import BLOCK\nfrom devkit.harness import BaculaBuild\n"),
        ("tests/simulator_conformance/test_x.py", "from .conftest import block\n"),
        ("bench/x.py", "from devkit.simulator.fixtures import start_simulator\n"),
        ("devkit/x.py", "from protocol import Mode\nfrom .fdpeer import FDPeer\n"),
        ("bacula_ec2/x.py", "from protocol import Mode\nfrom .jobs import chain\n"),
    ],
)
def test_the_scanner_allows_the_intended_imports(path: str, source: str) -> None:
    assert violations(REPO / path, source) == []


GUEST_MAY_IMPORT = {"bacula_ec2.jobs", "bacula_ec2.jobs.safefs"}


def guest_violations(path: Path, source: str) -> list[str]:
    """`bacula_ec2.guest` knows nothing of AWS or Bacula: the stdlib, dissect, itself and
    `jobs.safefs` only (docs/ARCHITECTURE.md)."""
    import sys

    found = []
    for line, target, _relative in imports(source, module_name(path), path.name == "__init__.py"):
        head = target.split(".")[0]
        if head in sys.stdlib_module_names or head in ("__future__", "dissect"):
            continue
        if target.startswith("bacula_ec2.guest") or target in GUEST_MAY_IMPORT:
            continue
        found.append(f"{path.relative_to(REPO)}:{line}: bacula_ec2.guest must not import {target}")
    return found


def test_the_guest_reader_imports_only_the_stdlib_dissect_and_safefs() -> None:
    guest = sorted((REPO / "bacula_ec2" / "guest").glob("*.py"))
    assert guest
    found = [v for path in guest for v in guest_violations(path, path.read_text())]
    assert not found, "\n".join(found)
    bad = guest_violations(REPO / "bacula_ec2/guest/x.py", "from ..jobs import backup\nimport boto3\n")
    assert len(bad) == 2, bad
