"""Parameters: last value wins, every error names its parameter, secrets stay secret."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bacula_ec2 import params
from bacula_ec2.params import (
    ParameterError,
    parameters_markdown,
    parse_parameters,
    restore_option_items,
    valid_param_names,
)
from devkit.fake_aws import FakeAws
from devkit.jobkit import Director

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


# ---------------------------------------------------------------- AWS limits, checked up front

_KEY_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=",= ")
_VALUE_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=", ")


@st.composite
def tag_sets(draw: st.DrawFn) -> dict[str, str]:
    """Tag maps around every limit: counts near 40/46/50, keys near 127/128, values near
    255/256, and now and then a reserved prefix in any case."""
    count = draw(st.sampled_from([0, 1, 39, 40, 41, 45, 46, 47, 49, 50, 51]))
    tags: dict[str, str] = {}
    for i in range(count):
        key_len = draw(st.sampled_from([1, 5, 126, 127, 128, 129]))
        prefix = draw(st.sampled_from(["", "", "", "", "aws:", "AwS:", "bacula-ec2:", "BACULA-EC2:"]))
        stem = f"{prefix}{i}-"
        key = stem + draw(st.text(_KEY_CHARS, min_size=0, max_size=3))
        key = (key + "k" * key_len)[: max(key_len, len(stem))]
        value_len = draw(st.sampled_from([0, 3, 254, 255, 256, 257]))
        tags[key] = "v" * value_len
    return tags


def _line(tags: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in tags.items())


def _fits(tags: dict[str, str], room: int, key_max: int, value_max: int, reserved: bool) -> bool:
    return (
        len(tags) <= room
        and all(len(k) <= key_max and len(v) <= value_max for k, v in tags.items())
        and not (reserved and any(k.lower().startswith(("aws:", "bacula-ec2:")) for k in tags))
    )


@settings(max_examples=150, deadline=None)
@given(tag_sets(), st.sampled_from(["snapshot_tags", "restore_tags", "instance_tags"]))
def test_tags_are_refused_exactly_where_aws_would(tags: dict[str, str], name: str) -> None:
    """snapshot_tags: EC2's limits, minus the 10 tags of our own; restore_tags: also
    StartSnapshot's (127/255), minus 4; instance_tags (a filter): EC2's lengths and count, and
    aws:* may be matched."""
    room, key_max, value_max, reserved = {
        "snapshot_tags": (40, 128, 256, True),
        "restore_tags": (46, 127, 255, True),
        "instance_tags": (50, 128, 256, False),
    }[name]
    if _fits(tags, room, key_max, value_max, reserved):
        assert getattr(parse_parameters([(name, _line(tags))]), name) == tags
    else:
        with pytest.raises(ParameterError, match=f"parameter {name}: ") as info:
            parse_parameters([(name, _line(tags))])
        assert len(str(info.value)) < 400, "the error names the tag, not the whole line"


def test_snapshot_tag_room_is_what_a_backup_leaves() -> None:
    """The room left for snapshot_tags is exact: 40 of them and the product's own make a
    snapshot of exactly 50 tags (the fake refuses a 51st, as EC2 does)."""

    aws = FakeAws()
    inst = aws.add_instance("web-1", devices=[("/dev/xvda", 1)])
    vid = aws.volume_of(inst.instance_id, "/dev/xvda")
    aws.write(vid, 0, 1)
    most = {f"team{i}": "x" for i in range(params.MAX_TAGS - params.PRODUCT_SNAPSHOT_TAGS)}
    director = Director(aws, [("instances", "web-1"), ("snapshot_tags", _line(most))])
    run = director.start("F")
    run.job.commit()
    tags = aws.tags_of(run.snapshots[vid])
    assert len(tags) == params.MAX_TAGS
    assert {k: v for k, v in tags.items() if not k.startswith("bacula-ec2:")} == most


@pytest.mark.parametrize(
    ("arn", "ok"),
    [
        ("arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", True),
        ("arn:aws:kms:us-east-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab", True),
        ("arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/1234abcd", True),
        ("arn:aws-cn:kms:cn-north-1:111122223333:key/1234abcd", True),
        ("1234abcd-12ab-34cd-56ef-1234567890ab", False),  # a key id
        ("alias/backup", False),
        ("arn:aws:kms:eu-west-1:111122223333:alias/backup", False),  # an alias ARN
        ("arn:aws:kms:eu-west-1:11112222333:key/1234abcd", False),  # 11 digits
        ("arn:aws:kms::111122223333:key/1234abcd", False),  # no region
        ("arn:aws:kms:eu-west-1:111122223333:key/", False),  # no key id
        ("arn:aws:s3:eu-west-1:111122223333:key/1234abcd", False),
    ],
)
def test_restore_kms_key_must_be_a_key_arn(arn: str, ok: bool) -> None:
    if ok:
        assert parse_parameters([("restore_kms_key", arn)]).restore_kms_key == arn
    else:
        with pytest.raises(ParameterError, match=r"parameter restore_kms_key: .*not a KMS key ARN"):
            parse_parameters([("restore_kms_key", arn)])


def test_zone_and_key_belong_to_the_restore_region() -> None:
    key = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd"
    ok = parse_parameters(
        [
            ("restore_region", "eu-west-1"),
            ("restore_availability_zone", "eu-west-1b"),
            ("restore_kms_key", key),
        ]
    )
    assert ok.restore_availability_zone == "eu-west-1b"
    assert parse_parameters([("restore_availability_zone", "us-west-2-lax-1a")]).restore_availability_zone
    with pytest.raises(ParameterError, match="restore_availability_zone: 'us-east-1a' is not a zone of"):
        parse_parameters([("restore_region", "eu-west-1"), ("restore_availability_zone", "us-east-1a")])
    with pytest.raises(ParameterError, match="restore_kms_key: the key is in eu-west-1, the restore goes to"):
        parse_parameters([("restore_availability_zone", "us-east-1a"), ("restore_kms_key", key)])
    with pytest.raises(ParameterError, match="parameter restore_availability_zone: 'eu-west-1'"):
        parse_parameters([("restore_availability_zone", "eu-west-1")])  # a region, not a zone


def test_restore_name_fits_a_tag_value() -> None:
    assert parse_parameters([("restore_name", "n" * 255)]).restore_name == "n" * 255
    with pytest.raises(ParameterError, match="parameter restore_name: 256 characters"):
        parse_parameters([("restore_name", "n" * 256)])


def test_ca_bundle_must_be_a_readable_pem_file(tmp_path: Path) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    assert parse_parameters([("ca_bundle", str(pem))]).ca_bundle == str(pem)
    assert parse_parameters([("ca_bundle", "")]).ca_bundle is None
    with pytest.raises(ParameterError, match=r"parameter ca_bundle: .*is not a file"):
        parse_parameters([("ca_bundle", str(tmp_path / "missing.pem"))])
    with pytest.raises(ParameterError, match=r"parameter ca_bundle: .*is not a file"):
        parse_parameters([("ca_bundle", str(tmp_path))])
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ParameterError, match=r"parameter ca_bundle: .*holds no PEM certificate"):
        parse_parameters([("ca_bundle", str(junk))])
    if os.geteuid() != 0:  # root reads anything
        pem.chmod(0)
        with pytest.raises(ParameterError, match="parameter ca_bundle: cannot read"):
            parse_parameters([("ca_bundle", str(pem))])
