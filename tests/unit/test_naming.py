"""Catalog paths round-trip, and every backup's block image has a name of its own."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bacula_ec2 import naming


def test_paths_of_a_full_backup() -> None:
    assert naming.instance_json("i-0abc") == "/@amazon-ec2/i-0abc/i-0abc.json"
    assert naming.volume_json("i-0abc", "vol-01", "/dev/sda1", 8) == "/@amazon-ec2/i-0abc/vol-01-sda1-8G.json"
    assert (
        naming.volume_image("i-0abc", "vol-01", "/dev/sda1", 8, "F", 3)
        == "/@amazon-ec2/i-0abc/vol-01-sda1-8G.bimg"
    )
    assert naming.volume_map("i-0abc", "vol-01") == "/@amazon-ec2/i-0abc/vol-01.bmp"
    assert naming.volume_empty_map("i-0abc", "vol-01") == "/@amazon-ec2/i-0abc/vol-01.abmp"


def test_incremental_and_differential_names_are_unique() -> None:
    i = naming.volume_image("i-1", "vol-2", "xvdf", 16, "I", 42)
    d = naming.volume_image("i-1", "vol-2", "xvdf", 16, "D", 43)
    assert i.endswith("vol-2-xvdf-16G.I42.bimg") and d.endswith("vol-2-xvdf-16G.D43.bimg")
    parsed = naming.parse_catalog_path(i)
    assert (parsed.kind, parsed.level, parsed.job_id, parsed.device, parsed.size_gib) == (
        "bimg",
        "I",
        42,
        "xvdf",
        16,
    )
    assert parsed.image_name == "vol-2-xvdf-16G.img"


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "/@amazon-ec2/i-1/other.txt", "/@amazon-ec2/i-1/vol-2.I4.bmp", "/@amazon-ec2/i-1/a/b"],
)
def test_foreign_paths_refused(path: str) -> None:
    with pytest.raises(ValueError):
        naming.parse_catalog_path(path)


def test_strip_where() -> None:
    assert naming.strip_where("/tmp/r/@amazon-ec2/i-1/i-1.json", "/tmp/r") == "/@amazon-ec2/i-1/i-1.json"
    assert naming.strip_where("/@amazon-ec2/i-1/", "") == "/@amazon-ec2/i-1/"


def test_strip_where_with_a_where_that_looks_like_ours() -> None:
    where = "/srv/@amazon-ec2/restores"
    assert naming.strip_where(where + "/@amazon-ec2/i-1/i-1.json", where) == "/@amazon-ec2/i-1/i-1.json"


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=300), st.text(min_size=0, max_size=300))
def test_snapshot_description_fits_and_keeps_what_it_can(job: str, label: str) -> None:
    text = naming.snapshot_description(job, label)
    assert len(text) <= naming.DESCRIPTION_MAX
    full = f"bacula-ec2 {job} ({label})"
    if len(full) <= naming.DESCRIPTION_MAX:
        assert text == full
    elif len(job) <= 200:  # the job name stays whole, the label is cut
        assert text.startswith(f"bacula-ec2 {job} (") and text.endswith("...)")
        assert len(text) == naming.DESCRIPTION_MAX
    else:
        assert text == full[: naming.DESCRIPTION_MAX - 3] + "..."


def test_description_cuts_only_what_is_too_long() -> None:
    assert naming.description("x" * 255) == "x" * 255
    assert naming.description("x" * 256) == "x" * 252 + "..."
    assert naming.snapshot_description("job", "i-1 (web)") == "bacula-ec2 job (i-1 (web))"
