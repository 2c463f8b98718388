"""`.ls` and `.query` answers (jobs/browse.py) against the in-memory AWS."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bacula_ec2.jobs import browse
from bacula_ec2.jobs.context import JobError
from bacula_ec2.params import parse_parameters
from devkit.fake_aws import FakeAws
from protocol.attrs import FileAttrs
from protocol.query import format_pair
from protocol.text import encode_command


def ls(aws: FakeAws, path: str) -> list[browse.Entry]:
    return browse.listing(lambda region: aws, path)


def test_instances_are_listed_by_id_with_their_name_as_label() -> None:
    aws = FakeAws()
    web = aws.add_instance("web-1")
    bare = aws.add_instance(None)
    entries = ls(aws, "/eu-west-1")
    assert [(e.name, e.directory, e.label) for e in entries] == sorted(
        [(f"{web.instance_id}/", True, "web-1"), (f"{bare.instance_id}/", True, None)]
    )


@pytest.mark.parametrize("key", ["web-1", "i-{id}", "/i-{id}/"])
def test_a_path_takes_the_name_or_the_id(key: str) -> None:
    aws = FakeAws()
    web = aws.add_instance("web-1", devices=[("/dev/xvda", 1), ("/dev/xvdf", 2)])
    aws.add_instance("db-1")
    key = key.replace("i-{id}", web.instance_id)
    entries = ls(aws, f"/eu-west-1/{key.strip('/')}/")
    vols = [aws.volume_of(web.instance_id, d) for d in ("/dev/xvda", "/dev/xvdf")]
    assert [(e.name, e.size, e.directory) for e in entries] == [
        (f"{vols[0]}-xvda-1G", 1 << 30, False),
        (f"{vols[1]}-xvdf-2G", 2 << 30, False),
    ]


def test_an_ambiguous_name_names_the_ids_it_matches() -> None:
    aws = FakeAws()
    a, b = aws.add_instance("web-1"), aws.add_instance("web-1")
    gone = aws.add_instance("web-1", state="terminated")
    with pytest.raises(JobError) as err:
        ls(aws, "/eu-west-1/web-1")
    text = str(err.value)
    ids = sorted([a.instance_id, b.instance_id])
    assert f"the Name 'web-1' is ambiguous in region eu-west-1: instances {ids[0]}, {ids[1]} carry it" in text
    assert gone.instance_id not in text and f"path=/eu-west-1/{ids[0]}" in text


def test_a_terminated_twin_does_not_make_a_name_ambiguous_and_an_unknown_one_is_named() -> None:
    aws = FakeAws()
    live = aws.add_instance("web-1")
    aws.add_instance("web-1", state="terminated")
    assert ls(aws, "/eu-west-1/web-1") == ls(aws, f"/eu-west-1/{live.instance_id}")
    with pytest.raises(JobError, match=r"no instance with the id or Name 'nope-1' in region eu-west-1"):
        ls(aws, "/eu-west-1/nope-1")
    with pytest.raises(JobError, match="no instance with the id or Name 'i-00000000deadbeef0'"):
        ls(aws, "/eu-west-1/i-00000000deadbeef0")


def test_an_id_shaped_name_is_found_by_name_when_no_instance_has_that_id() -> None:
    aws = FakeAws()
    odd = aws.add_instance("i-0123456789abcdef0")
    assert ls(aws, "/eu-west-1/i-0123456789abcdef0") == ls(aws, f"/eu-west-1/{odd.instance_id}")


def test_too_deep_a_path_says_what_can_be_listed() -> None:
    with pytest.raises(JobError, match=r"use /, /<region> or /<region>/<instance id or Name>"):
        ls(FakeAws(), "/eu-west-1/web-1/vol-1")


@given(st.text(max_size=40))
def test_a_shown_name_fits_one_listing_line(name: str) -> None:
    """Any Name tag becomes a link target the protocol carries on one line (control
    characters shown as `?`), or none at all when it is only blanks."""
    shown = browse.shown_name(name)
    model = ["?" if ord(c) < 32 or ord(c) == 127 else c for c in name]
    visible = [c for c in model if not c.isspace()]
    assert (shown is None) == (not visible)
    if shown is not None:
        FileAttrs(f"{name!r}/", "S", mode=0o040750, link=shown).validate()
        assert b"\n" not in encode_command("LSTAT:" + shown)[:-1]
        assert [c for c in shown if not c.isspace()] == visible


def test_help_lists_every_parameter_once_without_aws() -> None:
    def no_aws() -> FakeAws:
        raise AssertionError("help needs no AWS")

    params = parse_parameters([])
    for what in ("help", ""):
        rows = browse.query(no_aws, params, what)
        assert [row[0][0] for row in rows] == list(browse.QUERIES)
        assert all(len(row) == 1 and row[0][1] for row in rows)
        for row in rows:
            format_pair(*row[0])  # the FD can carry it (no ',' in a value)
    assert set(browse.QUERIES) == {"help", "regions", "instances", "volumes", "snapshots"}


def test_every_parameter_the_help_names_is_answered_and_others_point_at_help() -> None:
    aws = FakeAws()
    aws.add_instance("web-1")
    params = parse_parameters([])
    for what in browse.QUERIES:
        assert browse.query(lambda: aws, params, what) is not None
    with pytest.raises(JobError, match=r"unknown query 'nonsense'.*parameter=help describes them"):
        browse.query(lambda: aws, params, "nonsense")
