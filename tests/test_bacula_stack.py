"""The real Bacula stack: plugin loads in bacula-fd; the C header matches bacula_ec2.params."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

from bacula_ec2.params import restore_option_items, valid_param_names
from devkit.harness import BaculaBuild, StackFactory

REPO = Path(__file__).resolve().parents[1]


def _load_generator() -> ModuleType:
    path = REPO / "packaging" / "gen_params_header.py"
    spec = importlib.util.spec_from_file_location("gen_params_header", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_status_client_lists_ec2_plugin(bacula_stack: StackFactory) -> None:
    stack = bacula_stack(["ec2: region=us-east-1"])
    out = stack.status_client()
    assert re.search(r"^\s*Plugin:.*\bec2\(0\.1\.0\)", out, re.MULTILINE), out


def test_compiled_header_lists_every_param(bacula_build: BaculaBuild) -> None:
    header = bacula_build.params_header.read_text()
    valid = header.split("valid_params[]", 1)[1]
    for name in valid_param_names():
        assert f'   "{name}",' in valid, name
    items = header.split("plugin_items_dump[]", 1)[1].split("};", 1)[0]
    for name, *_ in restore_option_items():
        assert f'{{"{name}", ini_store_' in items, name


def test_c_string_escaping() -> None:
    c_string = _load_generator().c_string
    assert c_string('a "b" \\ c?') == '"a \\"b\\" \\\\ c\\?"'
    assert c_string("x\ny\t") == '"x\\ny\\t"'
    assert c_string("é1") == '"\\303\\2511"'
