"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from devkit.harness import BaculaBuild, BaculaError, BaculaStack, StackFactory, ensure_build

# ---------------------------------------------------------------------------
# Real Bacula 15.0.3 stack (devkit/harness/bacula.py). Tests that use these
# fixtures are marked `bacula` automatically (deselect with `-m "not bacula"`).
# ---------------------------------------------------------------------------

BACULA_FIXTURES = frozenset({"bacula_build", "bacula_stack"})

# tests/package/ (Debian's packaged bacula-fd in a trixie root, needs the .deb of
# `make package`) runs only when named: `make test-package` = `pytest tests/package`.
PACKAGE_TESTS = Path(__file__).resolve().parent / "package"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path != PACKAGE_TESTS:
        return None
    named = (Path(config.invocation_params.dir, arg.split("::")[0]).resolve() for arg in config.args)
    return not any(p == PACKAGE_TESTS or PACKAGE_TESTS in p.parents for p in named)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if BACULA_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.bacula)


@pytest.fixture(scope="session")
def bacula_build() -> BaculaBuild:
    """Cached Bacula build + ec2-fd.so (about 2 minutes the very first time, then < 1 s)."""
    try:
        return ensure_build()
    except BaculaError as exc:
        pytest.fail(f"cannot build Bacula or ec2-fd.so:\n{exc}", pytrace=False)


@pytest.fixture
def bacula_stack(bacula_build: BaculaBuild, tmp_path: Path) -> Iterator[StackFactory]:
    """Factory: ``make(plugin_commands, **kw)`` -> a started BaculaStack, stopped at teardown.

    ``kw`` are BaculaStack options (debug_level, backend_cmd, accurate, fd_env, ...).
    """
    stacks: list[BaculaStack] = []

    def make(plugin_commands: Sequence[str], **kw: Any) -> BaculaStack:
        kw.setdefault("prefix", bacula_build.prefix)
        kw.setdefault("plugin_so", bacula_build.plugin_so)
        stack = BaculaStack(tmp_path / f"bacula-{len(stacks)}", plugin_commands, **kw)
        stacks.append(stack)
        return stack.start()

    yield make
    for stack in stacks:
        stack.stop()


# ---------------------------------------------------------------------------
# Other fixtures (added by the lead) go below this line.
# ---------------------------------------------------------------------------

# ---------------------------------------------------------------------------
# AWS simulator (devkit/simulator): `simulator` (session) and `sim` (reset per test).
# ---------------------------------------------------------------------------

from devkit.simulator.fixtures import sim, simulator  # noqa: E402, F401
