"""bacula_ec2.guest.paths: the restore_files= / --files= patterns, checked against an
independent reference matcher (fnmatch per component, `**` as zero or more components)."""

from __future__ import annotations

from fnmatch import fnmatchcase

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bacula_ec2.guest import GuestError, parse_patterns
from bacula_ec2.guest.paths import parse_pattern

NAMES = ["a", "b", "ab", ".env", "é", "a.conf", "b.conf"]
GLOBS = ["*", "?", "a*", "*.conf", "[ab]", "[!a]*", "**", "**", "a", ".env", "é"]


def reference(pattern: list[str], path: list[str]) -> bool:
    if not pattern:
        return not path
    if pattern[0] == "**":
        return reference(pattern[1:], path) or (bool(path) and reference(pattern, path[1:]))
    return bool(path) and fnmatchcase(path[0], pattern[0]) and reference(pattern[1:], path[1:])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(GLOBS), max_size=4), st.lists(st.sampled_from(NAMES), max_size=4))
def test_matching_agrees_with_the_reference(pattern: list[str], path: list[str]) -> None:
    pat = parse_pattern("/" + "/".join(pattern))
    assert pat.matches("/" + "/".join(path)) == reference(pattern, path)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(GLOBS), max_size=4), st.lists(st.sampled_from(NAMES), max_size=4))
def test_every_match_lies_below_the_prefix(pattern: list[str], path: list[str]) -> None:
    pat = parse_pattern("/" + "/".join(pattern))
    full = "/" + "/".join(path)
    if pat.matches(full):
        assert pat.prefix == "/" or full == pat.prefix or full.startswith(pat.prefix + "/")


def test_partitions_lists_and_refusals() -> None:
    pats = parse_patterns(" /etc/nginx/** , p2:/home/app/.env,vg0/root:/srv/*,")
    assert [(p.partition, p.path, p.prefix) for p in pats] == [
        (None, "/etc/nginx/**", "/etc/nginx"),
        ("p2", "/home/app/.env", "/home/app/.env"),
        ("vg0/root", "/srv/*", "/srv"),
    ]
    assert pats[0].matches("/etc/nginx") and pats[0].matches("/etc/nginx/a/b.conf")
    assert not pats[0].matches("/etc/nginx.conf") and not pats[0].matches("/etc")
    assert parse_pattern("/").matches("/") and parse_pattern("/**").matches("/x/y")
    assert parse_pattern("/a[/b").matches("/a[/b")  # an unclosed class is a literal
    for bad, why in (
        ("etc/x", "not an absolute guest path"),
        ("/etc/../x", "'..' is not allowed"),
        ("", "no guest"),
    ):
        with pytest.raises(GuestError, match=why):
            parse_patterns(bad)
