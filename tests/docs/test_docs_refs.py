"""What the documents point at exists: the source tree of docs/ARCHITECTURE.md, every
`make <target>`, and every `python -m <module> [--flags]` (with its flags) written in a code
block or an inline code span of README.md and docs/*.md, also in blocks that do not run."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
import re
import subprocess
import sys
from functools import cache

import botocore.session
import pytest

from devkit import doctest_md as md
from devkit.simulator.control import SimulatorClient
from devkit.simulator.options import Options

REPO = md.REPO


def _code() -> list[tuple[str, str]]:
    """(where, text) of every fenced block and inline span of every document."""
    found = [(b.where, b.text) for b in md.all_blocks()]
    found += [(i.where, i.text) for p in md.documents() for i in md.inline_spans(p)]
    return found


def test_architecture_tree_is_the_source_tree() -> None:
    """Every name in the tree exists, and every module of protocol/, bacula_ec2/,
    bacula_ec2/aws/ and devkit/ is in it."""
    (block,) = [
        b
        for b in md.all_blocks()
        if b.where.startswith("docs/ARCHITECTURE.md") and b.reason == "the source tree"
    ]
    stack: list[str] = []
    listed: set[str] = set()
    for line in block.text.splitlines():
        match = re.match(r"^( *)(\S.*?)(?:\s{2,}|$)", line)
        if not match or len(match[1]) >= 20:  # a description's continuation line
            continue
        del stack[len(match[1]) // 2 :]
        for name in match[2].split(", "):
            path = "/".join([*stack, name.rstrip("/")])
            listed.add(path)
            assert (REPO / path).exists(), f"docs/ARCHITECTURE.md names {path}, which does not exist"
        if match[2].endswith("/"):
            stack.append(match[2].rstrip("/"))
    for package in ("protocol", "bacula_ec2", "bacula_ec2/aws", "devkit"):
        for module in sorted((REPO / package).glob("*.py")):
            rel = f"{package}/{module.name}"
            assert module.name == "__init__.py" or rel in listed, f"docs/ARCHITECTURE.md does not list {rel}"


def test_make_targets_exist() -> None:
    targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M))
    named = [
        (where, t) for where, text in _code() for t in re.findall(r"(?:^|[\s;`(])make ([a-z][\w-]*)", text)
    ]
    assert named
    for where, target in named:
        assert target in targets, f"{where}: `make {target}` is not a target of the Makefile"


@cache
def _help(module: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"python -m {module} --help exited {proc.returncode}:\n{proc.stderr}"
    return proc.stdout


_MODULE = re.compile(r"python3? -m ([\w.]+)([^`\n#|]*)")


@pytest.mark.parametrize("where,module,args", [(w, *m) for w, t in _code() for m in _MODULE.findall(t)])
def test_python_modules_and_flags_exist(where: str, module: str, args: str) -> None:
    assert importlib.util.find_spec(module) is not None, f"{where}: no module {module}"
    flags = re.findall(r"(?<![\w-])(--[a-z][\w-]*)", args)
    if not flags:  # only ask for --help where the document shows flags (devkit.demo has none)
        return
    text = _help(module)
    for flag in flags:
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), (
            f"{where}: python -m {module} has no {flag}"
        )


def _iam_actions() -> set[str]:
    policies = [
        json.loads(b.text) for b in md.all_blocks() if b.where.startswith("docs/IAM.md") and b.kind == "json"
    ]
    actions: set[str] = set()
    for policy in policies:
        for statement in policy["Statement"]:
            action = statement["Action"]
            actions |= set(action if isinstance(action, list) else [action])
    return actions


def test_iam_lists_exactly_the_calls_of_the_code() -> None:
    """docs/IAM.md's policies name every EC2 and EBS operation bacula_ec2/aws/ calls (the
    operation names of botocore's service models found in its source), and nothing more."""
    session = botocore.session.get_session()
    models = {svc: set(session.get_service_model(svc).operation_names) for svc in ("ec2", "ebs")}
    source = "".join(p.read_text() for p in sorted((REPO / "bacula_ec2" / "aws").glob("*.py")))
    literals = set(re.findall(r'"([A-Z][A-Za-z]+)"', source))
    called = {f"{svc}:{op}" for svc, ops in models.items() for op in literals & ops}
    assert len(called) > 20
    documented = {a for a in _iam_actions() if a.split(":")[0] in models}
    assert called - documented == set(), "docs/IAM.md does not grant what the code calls"
    assert documented - called == set(), "docs/IAM.md grants what the code never calls"


def _table_rows(doc: str, header: str) -> list[list[str]]:
    """The body rows (cells) of every table of ``doc`` whose header row starts with ``header``."""
    rows: list[list[str]] = []
    inside = False
    for line in (REPO / doc).read_text().splitlines():
        if line.startswith(header):
            inside = True
        elif inside and not line.startswith("|"):
            inside = False
        elif inside and not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def test_simulator_knob_tables_are_the_options() -> None:
    """docs/SIMULATOR.md's knob tables name every knob of devkit.simulator.options.Options
    (aws_hard is the section "Hard mode" itself), nothing else, with its default."""
    fields = {f.name: f for f in dataclasses.fields(Options)}
    documented: set[str] = {"aws_hard"}
    for first, default, *_ in _table_rows("docs/SIMULATOR.md", "| Knob"):
        for name in re.findall(r"`([a-z_0-9]+)`", first):
            assert name in fields, f"docs/SIMULATOR.md: `{name}` is not a knob"
            documented.add(name)
            spec = fields[name]
            value = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()  # type: ignore[misc]
            shown = re.match(r"`?(-?[\d.]+|true|false)\b", default)
            if isinstance(value, bool):
                assert shown and shown[1] == str(value).lower(), (
                    f"docs/SIMULATOR.md: {name} default {default!r}"
                )
            elif isinstance(value, int | float):
                assert shown and float(shown[1]) == float(value), (
                    f"docs/SIMULATOR.md: {name} default {default!r}"
                )
    assert documented == set(fields), f"knobs missing from docs/SIMULATOR.md: {set(fields) - documented}"


def test_simulator_client_table_is_the_client() -> None:
    """Every method docs/SIMULATOR.md lists for SimulatorClient exists with the parameters shown."""
    rows = _table_rows("docs/SIMULATOR.md", "| Method")
    assert len(rows) > 5
    for first, *_ in rows:
        for name, args in re.findall(r"`([a-z_0-9]+)\(([^)`]*)\)`", first):
            method = getattr(SimulatorClient, name, None)
            assert callable(method), f"docs/SIMULATOR.md: SimulatorClient has no {name}()"
            params = inspect.signature(method).parameters
            for arg in re.findall(r"(?:^|,\s*)\**([a-z_0-9]+)", args):
                assert arg in params, f"docs/SIMULATOR.md: {name}() has no parameter {arg}"
