"""LocalRestore: a volume is restored exactly or not at all, whatever the parts' order and
damage, and the newest part describes the result (issue 9).

The chains are encoded once per module with the real codec, on small volumes (12 blocks of
4 KiB; the codec and the restore are block-size agnostic): every part's expected content
is known by construction. The parts are fed to LocalRestore the way the backend feeds
them (a failing file does not stop the restore; a file without data is ended by the next
start) and the way bec2 does (the first failure abandons everything).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bacula_ec2 import naming
from bacula_ec2.jobs.restore_local import RestoreFailed

from .restore_local_kit import (
    BLOCKS,
    BS,
    CHAINS,
    FIVE,
    FIVE_HISTORY,
    IID,
    ONE,
    OTHER_JOB,
    OTHER_VOLUME,
    TWO,
    VID,
    Built,
    assert_exact,
    assert_failed_naming,
    build,
    feed,
    feed_like_bec2,
    files_under,
    header_length,
    new_restore,
    sha,
    volume_doc,
)

# ---------------------------------------------------------------------------- healthy chains


@pytest.mark.parametrize("n", [1, 2, 5])
def test_every_order_of_a_healthy_chain_restores_exactly(tmp_path: Path, n: int) -> None:
    chain = CHAINS[n].parts
    orders = list(itertools.permutations(chain))
    for i, order in enumerate(orders):
        target = tmp_path / f"o{i}"
        out = feed(target, [(p.name, p.data) for p in order], seed=i)
        assert out.ok, out.final
        assert not out.errors, out.errors
        assert_exact(target, chain[-1].content)
    # bec2's way too
    assert feed_like_bec2(tmp_path / "bec2", [(p.name, p.data) for p in chain[::-1]]) is None
    assert_exact(tmp_path / "bec2", chain[-1].content)


def test_each_point_in_time_of_the_five_part_history(tmp_path: Path) -> None:
    h = FIVE_HISTORY
    selections = {0: (0,), 1: (0, 1), 2: (0, 2), 3: (0, 2, 3), 4: (0, 2, 3, 4), 5: (0, 2, 3, 4, 5)}
    for point, picked in selections.items():
        parts = h.pick(*picked)
        random.Random(point).shuffle(parts)
        target = tmp_path / f"p{point}"
        out = feed(target, [(p.name, p.data) for p in parts])
        assert out.ok, out.final
        assert_exact(target, h.parts[point].content)


def test_a_newer_full_resets_what_an_older_chain_wrote(tmp_path: Path) -> None:
    """F1 I2 F3 I4 in one restore (the second Full under another device name): the result
    is F3 + I4 in every order, never a mix with blocks only the older chain had."""
    h = build(VID, "FIFI", seed=11, devices=["/dev/sda1", "/dev/sda1", "/dev/xvdf", "/dev/xvdf"], fresh=[2])

    def blocks(content: bytes) -> set[int]:
        return {b for b in range(BLOCKS) if content[b * BS : (b + 1) * BS] != bytes(BS)}

    assert blocks(h.parts[1].content) - blocks(h.parts[3].content), "the older chain must have more"
    for i, order in enumerate(itertools.permutations(h.parts)):
        target = tmp_path / f"o{i}"
        out = feed(target, [(p.name, p.data) for p in order], seed=i)
        assert out.ok, out.final
        assert_exact(target, h.parts[3].content, name=f"{VID}-xvdf-1G.img")
        assert any(s == "W" and "older" in t for s, t in out.reporter.lines), out.reporter.lines


# ---------------------------------------------------------------------------- damage

MUTATIONS = ("truncate", "flip", "empty", "other-volume", "other-job", "sibling", "twice")


def mutate(
    chain: list[Built], kind: str, index: int, rng: random.Random
) -> tuple[list[tuple[str, bytes]], str]:
    """The restore's files with one damaged; returns (files, the catalog name to be named)."""
    files = [(p.name, p.data) for p in chain]
    name, data = files[index]
    if kind == "truncate":
        files[index] = (name, data[: rng.randrange(len(data))])
    elif kind == "flip":
        pos = rng.randrange(len(data))
        files[index] = (name, data[:pos] + bytes([data[pos] ^ (1 << rng.randrange(8))]) + data[pos + 1 :])
    elif kind == "empty":
        files[index] = (name, b"")
    elif kind == "other-volume":
        files[index] = (name, rng.choice(OTHER_VOLUME.parts).data)
    elif kind == "other-job":
        files[index] = (name, rng.choice(OTHER_JOB.parts).data)
    elif kind == "sibling":  # another part of the same chain under this part's name
        other = rng.choice([p for i, p in enumerate(chain) if i != index] or [FIVE_HISTORY.parts[1]])
        files[index] = (name, other.data)
    else:  # the same file delivered twice
        files.insert(rng.randrange(len(files) + 1), (name, data))
    return files, name


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.sampled_from([1, 2, 5]),
    kind=st.sampled_from(MUTATIONS),
    data=st.data(),
)
def test_damaged_part_fails_its_volume_naming_the_file(
    tmp_path: Path, n: int, kind: str, data: st.DataObject
) -> None:
    chain = CHAINS[n].parts
    index = data.draw(st.integers(0, n - 1), label="damaged part")
    seed = data.draw(st.integers(0, 2**32), label="seed")
    rng = random.Random(seed)
    files, culprit = mutate(chain, kind, index, rng)
    files = data.draw(st.permutations(files), label="order")
    target = tmp_path / f"t{seed}-{kind}-{n}"
    out = feed(target, files, seed=seed)
    if kind == "other-job" and n == 1 and files[0][1] == OTHER_JOB.parts[0].data:
        # The other Job's Full of the same volume under the same name: a healthy one-part
        # chain of its own, restored exactly as it was backed up.
        assert out.ok, out.final
        assert_exact(target, OTHER_JOB.parts[0].content)
        return
    assert_failed_naming(out, target, culprit)
    bec2_target = target.with_name(target.name + "-bec2")
    message = feed_like_bec2(bec2_target, files, seed=seed)
    assert message is not None and culprit in message
    assert not files_under(bec2_target)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_truncation_at_every_byte_of_every_header(tmp_path: Path, n: int) -> None:
    chain = CHAINS[n].parts
    rng = random.Random(n)
    count = 0
    for index, part in enumerate(chain):
        for cut in range(header_length(part) + 1):
            files = [(p.name, p.data) for p in chain]
            files[index] = (part.name, part.data[:cut])
            if n == 2:  # both orders
                orders = [files, files[::-1]]
            else:
                rng.shuffle(files)
                orders = [files]
            for order in orders:
                target = tmp_path / str(count)
                count += 1
                out = feed(target, order, seed=cut)
                assert_failed_naming(out, target, part.name)
    assert count > n * 300


def test_truncated_incremental_in_either_order_leaves_no_image(tmp_path: Path) -> None:
    """The two cases of the issue: Full first (was a mixed image) and Incremental first
    (was an older image built without the damaged part)."""
    full, inc = TWO.parts
    damaged = (inc.name, inc.data[: len(inc.data) - 100])
    for i, files in enumerate([[(full.name, full.data), damaged], [damaged, (full.name, full.data)]]):
        target = tmp_path / str(i)
        out = feed(target, files)
        assert_failed_naming(out, target, inc.name)
        assert any("truncated" in e for e in out.errors), out.errors


def test_later_parts_of_a_failed_volume_are_read_and_dropped(tmp_path: Path) -> None:
    parts = FIVE.parts
    files = [(p.name, p.data) for p in parts]
    files[0] = (parts[0].name, parts[0].data[:-1])
    out = feed(tmp_path / "t", files)
    assert_failed_naming(out, tmp_path / "t", parts[0].name)
    assert len(out.errors) == 1, out.errors  # reported once while streaming, again at FINISH


def test_a_healthy_volume_beside_a_failed_one_is_restored(tmp_path: Path) -> None:
    good = OTHER_VOLUME.pick(0, 1)
    bad = TWO.parts
    files = [(p.name, p.data) for p in [*good, *bad]]
    files[-1] = (bad[1].name, bad[1].data[:300])
    out = feed(tmp_path / "t", files)
    assert not out.ok and out.final is not None and bad[1].name in out.final
    left = files_under(tmp_path / "t")
    assert set(left) == {f"@amazon-ec2/{IID}/vol-0bbb-sda1-1G.img"}
    assert sha(left[f"@amazon-ec2/{IID}/vol-0bbb-sda1-1G.img"].read_bytes()) == sha(good[1].content)


def test_gap_and_missing_full_fail_without_image(tmp_path: Path) -> None:
    h = FIVE_HISTORY
    out = feed(tmp_path / "a", [(p.name, p.data) for p in h.pick(3, 4)])
    assert not out.ok and out.final and "not the Full backup" in out.final
    assert not files_under(tmp_path / "a")
    out = feed(tmp_path / "b", [(p.name, p.data) for p in h.pick(0, 2, 4)])
    assert not out.ok and out.final and "missing between" in out.final
    assert not files_under(tmp_path / "b")


def test_an_error_while_closing_removes_the_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The class of the old bug: end() raising after the file was detached left the image."""
    full, inc = TWO.parts
    r, _rec = new_restore(tmp_path / "t")
    r.start(full.name)
    r.data(memoryview(full.data))
    r.end()
    r.start(inc.name)
    r.data(memoryview(inc.data))
    real = os.fsync

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(RestoreFailed, match="Input/output error"):
        r.finish()
    monkeypatch.setattr(os, "fsync", real)
    r.abandon()
    assert not files_under(tmp_path / "t")


# ---------------------------------------------------------------------------- newest part


def test_newest_part_names_the_image_and_keeps_its_json_in_every_order(tmp_path: Path) -> None:
    """Re-attached at another device and moved to another instance between the Full and
    the Incrementals: every order restores one image, under the newest name and folder,
    with the newest volume JSON beside it and no older copy looking current."""
    h = build(
        VID,
        "FII",
        seed=21,
        devices=["/dev/sda1", "/dev/xvdf", "/dev/xvdg"],
        instances=["i-0old", "i-0new", "i-0new"],
    )
    docs = []
    for p in h.parts:
        dev = naming.device_short_name(p.header.device or "")
        docs.append((naming.volume_json(p.header.instance_id or "", VID, dev, 1), volume_doc(p)))
    # Bacula restores the newest version of each path: the two Incrementals share a JSON name.
    docs = [docs[0], docs[2]]
    newest = h.parts[-1]
    for i, order in enumerate(itertools.permutations([(p.name, p.data) for p in h.parts] + docs)):
        if i % 7:
            continue  # a sample of the 5! orders keeps it fast
        target = tmp_path / str(i)
        out = feed(target, list(order), seed=i)
        assert out.ok, out.final
        left = files_under(target)
        assert set(left) == {
            f"@amazon-ec2/i-0new/{VID}-xvdg-1G.img",
            f"@amazon-ec2/i-0new/{VID}-xvdg-1G.json",
        }, left
        assert sha(left[f"@amazon-ec2/i-0new/{VID}-xvdg-1G.img"].read_bytes()) == sha(newest.content)
        kept = json.loads(left[f"@amazon-ec2/i-0new/{VID}-xvdg-1G.json"].read_text())
        assert kept["snapshot_id"] == newest.header.snapshot_id
        # the image carries the newest backup's time
        assert int(left[f"@amazon-ec2/i-0new/{VID}-xvdg-1G.img"].stat().st_mtime) == int(
            dt.datetime.fromisoformat(newest.header.created.replace("Z", "+00:00")).timestamp()
        )


def test_json_without_block_images_is_restored_as_is(tmp_path: Path) -> None:
    p = ONE.parts[0]
    name = naming.volume_json(IID, VID, "sda1", 1)
    out = feed(
        tmp_path / "t", [(naming.instance_json(IID), b'{"instance_id": "i-0aaa"}'), (name, volume_doc(p))]
    )
    assert out.ok, out.final
    assert set(files_under(tmp_path / "t")) == {
        f"@amazon-ec2/{IID}/{IID}.json",
        f"@amazon-ec2/{IID}/{VID}-sda1-1G.json",
    }


def test_a_corrupt_json_copy_fails_naming_it(tmp_path: Path) -> None:
    name = naming.instance_json(IID)
    out = feed(tmp_path / "t", [(name, b'{"instance_id": "i-0aaa"')])
    assert not out.ok and out.final and name in out.final and "JSON" in out.final
    assert not files_under(tmp_path / "t")


# ---------------------------------------------------------------------------- Replace=


def test_replace_never_keeps_existing_files_and_skips_the_volume(tmp_path: Path) -> None:
    target = tmp_path / "t"
    folder = target / "@amazon-ec2" / IID
    folder.mkdir(parents=True)
    (folder / f"{VID}-sda1-1G.img").write_bytes(b"existing image")
    (folder / f"{IID}.json").write_bytes(b"existing json")
    parts = TWO.parts
    files = [(naming.instance_json(IID), b'{"instance_id": "i-0aaa"}')] + [(p.name, p.data) for p in parts]
    out = feed(target, files, replace="n")
    assert out.ok, out.final
    assert (folder / f"{VID}-sda1-1G.img").read_bytes() == b"existing image"
    assert (folder / f"{IID}.json").read_bytes() == b"existing json"
    assert set(files_under(target)) == {
        f"@amazon-ec2/{IID}/{VID}-sda1-1G.img",
        f"@amazon-ec2/{IID}/{IID}.json",
    }
    warnings = [t for s, t in out.reporter.lines if s == "W"]
    assert any("Replace=never" in w and VID in w for w in warnings), warnings
    # the same with Replace=always: replaced
    out = feed(target, files, replace="a")
    assert out.ok, out.final
    assert sha((folder / f"{VID}-sda1-1G.img").read_bytes()) == sha(parts[-1].content)
    assert (folder / f"{IID}.json").read_bytes() == b'{"instance_id": "i-0aaa"}'


def test_replace_never_when_only_the_final_name_exists(tmp_path: Path) -> None:
    """The newest part's name differs from the first part's: the existing file under the
    newest name is kept, and nothing else is left."""
    h = build(VID, "FI", seed=31, devices=["/dev/sda1", "/dev/xvdf"])
    target = tmp_path / "t"
    folder = target / "@amazon-ec2" / IID
    folder.mkdir(parents=True)
    (folder / f"{VID}-xvdf-1G.img").write_bytes(b"keep me")
    out = feed(target, [(p.name, p.data) for p in h.parts], replace="n")
    assert out.ok, out.final
    assert set(files_under(target)) == {f"@amazon-ec2/{IID}/{VID}-xvdf-1G.img"}
    assert (folder / f"{VID}-xvdf-1G.img").read_bytes() == b"keep me"


@pytest.mark.parametrize(
    ("mode", "existing_offset", "replaced"),
    [
        ("w", -3600, True),  # the existing file is older than the backup: ifnewer replaces
        ("w", +3600, False),
        ("o", -3600, False),
        ("o", +3600, True),  # the existing file is newer than the backup: ifolder replaces
    ],
)
def test_replace_ifnewer_ifolder_compare_with_the_backup_time(
    tmp_path: Path, mode: str, existing_offset: int, replaced: bool
) -> None:
    part = ONE.parts[0]
    backup_time = int(dt.datetime.fromisoformat(part.header.created.replace("Z", "+00:00")).timestamp())
    target = tmp_path / "t"
    folder = target / "@amazon-ec2" / IID
    folder.mkdir(parents=True)
    image, doc = folder / f"{VID}-sda1-1G.img", folder / f"{IID}.json"
    for p in (image, doc):
        p.write_bytes(b"old")
        os.utime(p, (backup_time + existing_offset, backup_time + existing_offset))
    json_name = naming.instance_json(IID)
    out = feed(
        target,
        [(json_name, b'{"instance_id": "i-0aaa"}'), (part.name, part.data)],
        replace=mode,
        times={json_name: backup_time},
    )
    assert out.ok, out.final
    if replaced:
        assert sha(image.read_bytes()) == sha(part.content)
        assert doc.read_bytes() == b'{"instance_id": "i-0aaa"}'
        assert int(doc.stat().st_mtime) == backup_time
    else:
        assert image.read_bytes() == b"old" and doc.read_bytes() == b"old"
    assert set(files_under(target)) == {
        f"@amazon-ec2/{IID}/{VID}-sda1-1G.img",
        f"@amazon-ec2/{IID}/{IID}.json",
    }


def test_unknown_replace_letter_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RestoreFailed, match="Replace=x"):
        new_restore(tmp_path, replace="x")
