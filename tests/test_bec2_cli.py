"""bec2 as a command-line tool: --level spellings, --help and --version, --job_name, relative
paths, restore selection (--instances/--volumes/--exclude_*), and a restore into AWS that
goes where --region says and refuses a zone of another region before anything is staged.

bec2 runs in-process (`bacula_ec2.cli.main`) against the simulator; tests/test_bec2_exit_codes.py
runs the installed entry point.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bacula_ec2.cli import build_parser, main
from bacula_ec2.params import parse_level
from devkit.helpers import sha256_file
from devkit.simulator.fixtures import ACCESS_KEY

from .bec2_common import BLOCK, SECRET


def sim_args(sim: Any) -> list[str]:
    return [f"--access_key={ACCESS_KEY}", f"--secret_key={SECRET}", f"--endpoint_url={sim.endpoint}"]


def bec2(capsys: pytest.CaptureFixture[str], *args: str, code: int = 0) -> tuple[str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    assert rc == code, f"exit {rc}, wanted {code}:\n{err}"
    assert SECRET not in out + err
    return out, err


# ---------------------------------------------------------------------- no AWS needed


@given(st.sampled_from(["F", "Full", "I", "Incremental", "D", "Differential"]), st.data())
def test_level_takes_letters_and_names_in_any_case(word: str, data: st.DataObject) -> None:
    spelled = "".join(c.upper() if data.draw(st.booleans()) else c.lower() for c in word)
    assert parse_level(spelled) == word[0]
    assert build_parser().parse_args(["--operation=list", f"--level={spelled}"]).level == word[0]


@given(st.text(min_size=0, max_size=14))
def test_level_refuses_anything_else(text: str) -> None:
    known = {"f", "i", "d", "full", "incremental", "differential"}
    if text.strip().lower() in known:
        assert parse_level(text) in ("F", "I", "D")
    else:
        with pytest.raises(ValueError, match="is not a level"):
            parse_level(text)


def test_help_is_grouped_by_operation_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    sections = ["operation:", "backup and estimate:", "selection:", "restore:", "AWS connection", "examples:"]
    places = [text.find(f"\n{s}") for s in sections]
    assert -1 not in places and places == sorted(places), places
    section_of = {}
    for name in ("--level", "--keep_full_snapshot", "--instances", "--before", "--restore_as", "--local_path",
                 "--region", "--profile"):  # fmt: skip
        at = re.search(rf"^\s+{name}\b", text, re.M)
        assert at, name
        section_of[name] = max((p, s) for s, p in zip(sections, places, strict=True) if p < at.start())[1]
    assert section_of["--level"] == section_of["--keep_full_snapshot"] == "backup and estimate:"
    assert section_of["--instances"] == "selection:"
    assert section_of["--before"] == section_of["--restore_as"] == section_of["--local_path"] == "restore:"
    assert section_of["--region"].startswith("AWS connection")
    for line in ("bec2 --operation=backup", "bec2 --operation=estimate", "bec2 --operation=list",
                 "bec2 --operation=restore", "130", "143"):  # fmt: skip
        assert line in text.split("examples:")[1], line
    with pytest.raises(SystemExit):
        main(["--version"])
    assert re.fullmatch(r"bec2 \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)


@pytest.mark.parametrize("name", ["nightly/web", "nightly\n", "night ly", "-x", "x" * 101])
def test_job_name_refused(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _o, err = bec2(capsys, "--operation=backup", "--instances=x", f"--output={tmp_path}",
                   "--region=us-east-1", f"--job_name={name}", code=2)  # fmt: skip
    assert "--job_name" in err and "is not a job name" in err
    assert not (tmp_path / "backups").exists()


# ---------------------------------------------------------------------- against the simulator


@pytest.fixture
def folder(sim: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """One Full of web-1 (sda1, sdf) and db-1 (sda1) in a folder; every volume holds data."""
    sim.client.set_options(snapshot_delay=0.02)
    web = sim.client.create_instance(
        "web-1", volumes=[{"size_gib": 1, "device": "/dev/sda1"}, {"size_gib": 1, "device": "/dev/sdf"}]
    )
    db = sim.client.create_instance("db-1", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    for n, vid in enumerate([*web["volume_ids"], *db["volume_ids"]]):
        sim.client.write_volume(vid, n * BLOCK, os.urandom(2 * BLOCK))
    store = tmp_path / "store"
    bec2(capsys, "--operation=backup", "--instances=web-1,db-1", f"--output={store}", "--region=us-east-1",
         *sim_args(sim))  # fmt: skip
    vols = {
        "web_root": web["volume_ids"][0],
        "web_data": web["volume_ids"][1],
        "db_root": db["volume_ids"][0],
    }
    return {"store": store, "web": web["instance_id"], "db": db["instance_id"], **vols,
            "sha": {v: sim.client.volume_sha256(v) for v in vols.values()}}  # fmt: skip


def restored(target: Path) -> dict[str, str]:
    """volume id -> SHA-256 of each image under `target`."""
    return {p.name.split("-")[0] + "-" + p.name.split("-")[1]: sha256_file(p) for p in target.rglob("*.img")}


def test_restore_selects_instances_and_volumes_relative_paths(
    folder: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    f = folder
    store = f"--output={f['store']}"
    cases: list[tuple[list[str], set[str]]] = [
        ([f"--volumes={f['web_data']}"], {f["web_data"]}),
        (["--instances=db-1"], {f["db_root"]}),
        ([f"--instances={f['web']}", "--exclude_volumes=sdf"], {f["web_root"]}),
        (["--exclude_instances=web-1"], {f["db_root"]}),
        (["--instances=db-1", f"--volumes={f['web_root']}"], {f["db_root"], f["web_root"]}),
    ]
    for n, (selection, wanted) in enumerate(cases):
        target = tmp_path / f"r{n}"
        bec2(capsys, "--operation=restore", store, f"--local_path={target}", *selection)
        assert restored(target) == {v: f["sha"][v] for v in wanted}, selection
        owner = {f["web_root"]: f["web"], f["web_data"]: f["web"], f["db_root"]: f["db"]}
        folders = {p.name for p in (target / "@amazon-ec2").iterdir()}
        assert folders == {owner[v] for v in wanted}, selection
        # the JSON of each restored volume and of its instance, nothing of the others
        jsons = sorted(p.name for p in target.rglob("*.json"))
        assert jsons == sorted(
            [f"{i}.json" for i in folders]
            + [p.name for v in wanted for p in (target / "@amazon-ec2" / owner[v]).glob(f"{v}-*.json")]
        ) and len(jsons) == len(folders) + len(wanted), jsons
    refused = [
        (["--instances=nope-1"], "no instance 'nope-1'"),
        (["--volumes=vol-0123456789abcdef0"], "vol-0123456789abcdef0 not in this restore"),
        (["--exclude_volumes=sdz"], "sdz is no volume id or device"),
        (["--instances=db-1", f"--exclude_volumes={f['db_root']}"], "leaves no volume"),
        (["--instance_tags=env=prod"], "--instance_tags"),
    ]
    for selection, message in refused:
        target = tmp_path / "refused"
        _o, err = bec2(capsys, "--operation=restore", store, f"--local_path={target}", *selection, code=2)
        assert message in err, err
        assert "web-1" in err or "--instance_tags" in err, "the message lists what the restore holds"
        assert not target.exists()
    # relative paths are taken from the current directory
    monkeypatch.chdir(folder["store"].parent)
    bec2(capsys, "--operation=restore", "--output=store", "--local_path=rel/images", "--instances=db-1")
    assert restored(tmp_path / "rel" / "images") == {folder["db_root"]: folder["sha"][folder["db_root"]]}
    _o, err = bec2(capsys, "--operation=restore", "--output=store", "--local_path=~/images", code=2)
    assert "does not expand ~" in err
    assert not (tmp_path / "~").exists()


def test_restore_into_aws_goes_where_region_says(
    sim: Any, folder: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = folder
    aws = ["--operation=restore", "--restore_to=aws", f"--output={f['store']}", *sim_args(sim)]
    # --region on a restore is where the volumes go (the backup was in us-east-1)
    out, _e = bec2(capsys, *aws, "--region=eu-west-1", f"--volumes={f['web_data']}")
    (line,) = out.splitlines()
    m = re.fullmatch(rf"volume (vol-\w+) in (eu-west-1[a-z]) \(from {f['web_data']}\)", line)
    assert m, line
    assert sim.client.volume_sha256(m[1], region="eu-west-1") == f["sha"][f["web_data"]]
    _o, err = bec2(capsys, *aws, "--region=eu-west-1", "--restore_region=us-west-2", code=2)
    assert "give one" in err
    # a zone of another region: refused before anything is staged or uploaded
    sim.client.reset_stats()
    for zone_args, message in (
        (
            ["--restore_availability_zone=eu-west-1b"],
            "is a zone of eu-west-1, but the restore goes to us-east-1",
        ),
        (
            ["--region=us-west-2", "--restore_availability_zone=eu-west-1b"],
            "not a zone of restore_region us-west-2",
        ),
    ):
        _o, err = bec2(capsys, *aws, *zone_args, code=2)
        assert message in err, err
    requests = sim.client.stats()["requests"]
    assert not {"StartSnapshot", "PutSnapshotBlock", "CreateVolume"} & set(requests), requests
    assert not list(f["store"].glob("bacula-ec2-restore-*")), "nothing was staged"
    # one volume of a two-volume instance attached to another instance: --volumes picks it
    target = sim.client.create_instance("target", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    attach = [f"--restore_attach_instance={target['instance_id']}", "--restore_attach_device=/dev/sdg"]
    _o, err = bec2(capsys, *aws, *attach, "--instances=web-1", code=2)
    assert "choose one with --volumes=" in err
    out, _e = bec2(capsys, *aws, *attach, f"--volumes={f['web_data']}")
    assert f"attached to {target['instance_id']} as /dev/sdg" in out
    # a new instance: one instance at a time, no subnet needed (the original's, in its region)
    _o, err = bec2(capsys, *aws, "--restore_as=instance", code=2)
    assert "choose one with --instances=" in err
    out, _e = bec2(capsys, *aws, "--restore_as=instance", "--instances=web-1", "--restore_start=no")
    assert re.match(
        rf"instance i-\w+ \(t3.micro, us-east-1\w, stopped; .*\) from {f['web']}$", out.strip()
    ), out


def test_backend_refuses_a_zone_of_another_region_before_the_first_block(sim: Any, tmp_path: Path) -> None:
    """The same check in the job logic, through the backend as Bacula drives it (where=/):
    at the end of the restore stream, before StartSnapshot, naming both regions."""
    from .backend.common import FakeBacula
    from .backend.restore_aws_kit import restore_aws, world

    sim.client.set_options(snapshot_delay=0.02)
    inst = sim.client.create_instance("web-1", volumes=[{"size_gib": 1, "device": "/dev/sda1"}])
    sim.client.write_volume(inst["volume_ids"][0], 0, os.urandom(2 * BLOCK))
    jobs = [FakeBacula(sim, tmp_path, ("instances=web-1",)).backup("F")]
    before = {"us-east-1": world(sim), "eu-west-1": world(sim, "eu-west-1")}
    sim.client.reset_stats()
    messages = restore_aws(sim, tmp_path, jobs, "restore_availability_zone=eu-west-1b")
    fatal = [t for s, t in messages if s == "A"]
    assert fatal and "restore_availability_zone eu-west-1b is a zone of eu-west-1, but the restore goes to " \
        "us-east-1" in fatal[0] and "restore_region=eu-west-1" in fatal[0], messages  # fmt: skip
    requests = sim.client.stats()["requests"]
    assert not {"StartSnapshot", "PutSnapshotBlock", "CreateVolume"} & set(requests), requests
    assert {"us-east-1": world(sim), "eu-west-1": world(sim, "eu-west-1")} == before
