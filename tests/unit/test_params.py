"""Parameters: last value wins, every error names its parameter, secrets stay secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from bacula_ec2.params import (
    ParameterError,
    parameters_markdown,
    parse_parameters,
    restore_option_items,
    valid_param_names,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "PARAMETERS.md"


def test_last_value_wins_and_lists_split() -> None:
    p = parse_parameters(
        [("instances", "web-1"), ("instances", "web-1, i-0123456789abcdef0"), ("bitmap_headers", "no")]
    )
    assert p.instances == ["web-1", "i-0123456789abcdef0"]
    assert p.bitmap_headers is False


def test_fd_renders_valueless_token_as_1() -> None:
    assert parse_parameters([("keep_full_snapshot", "1"), ("Accurate", "1")]).keep_full_snapshot


@pytest.mark.parametrize(
    ("pairs", "needle"),
    [
        ([("bogus", "1")], "unknown parameter 'bogus'"),
        ([("Region", "us-east-1")], "did you mean 'region'"),
        ([("concurrent_threads", "lots")], "parameter concurrent_threads"),
        ([("concurrent_threads", "0")], "parameter concurrent_threads"),
        ([("region", "mars-1")], "parameter region"),
        ([("instance_tags", "env")], "parameter instance_tags"),
        ([("instance_regex", "(")], "parameter instance_regex"),
        ([("bitmap_headers", "perhaps")], "parameter bitmap_headers"),
        ([("restore_to", "tape")], "parameter restore_to"),
        ([("endpoint_url", "127.0.0.1:9")], "parameter endpoint_url"),
    ],
)
def test_errors_name_the_parameter(pairs: list[tuple[str, str]], needle: str) -> None:
    with pytest.raises(ParameterError, match=needle.replace("(", r"\(")):
        parse_parameters(pairs)


def test_secret_never_in_errors_or_repr() -> None:
    p = parse_parameters([("secret_key", "wJalrXUtnFEMI/K7MDENG"), ("session_token", "TOKEN123456")])
    assert "wJalrXUtnFEMI" not in repr(p)
    assert p.redacted() == {"secret_key": "***", "session_token": "***"}
    assert set(p.secret_values()) == {"wJalrXUtnFEMI/K7MDENG", "TOKEN123456"}


def test_fd_keys_accepted() -> None:
    p = parse_parameters([("listing", "/"), ("query", "instances"), ("abort_on_error", "1")])
    assert p.listing == "/" and p.query == "instances" and p.abort_on_error


def test_valid_params_cover_every_field_and_restore_options() -> None:
    names = valid_param_names()
    for required in ("region", "instances", "abort_on_error", "listing", "query", "secret_key"):
        assert required in names
    for name, kind, _prompt, _default in restore_option_items():
        assert name in names
        assert kind in ("str", "int64", "bool")


def test_docs_table_is_current() -> None:
    assert parameters_markdown() in DOCS.read_text(), (
        "run: python -m bacula_ec2.params and update docs/PARAMETERS.md"
    )
