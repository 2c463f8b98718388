"""jobs.chainview: a chain of block images read in place equals the merged image, reads only
the blocks asked for, and never returns a byte it could not verify."""

from __future__ import annotations

import datetime as dt
import os
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bacula_ec2.formats.blockimage import PREFIX_SIZE, RECORD_SIZE
from bacula_ec2.jobs.chainview import ChainDamaged, ChainView, open_folder_chain
from bacula_ec2.jobs.folder import FolderError
from devkit.guestdisks import PartSpec, folder_backup, write_part

BS = 4096
T0 = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)


def when(i: int) -> str:
    return (T0 + dt.timedelta(days=i)).strftime("%Y-%m-%dT%H:%M:%SZ")


def spec(
    i: int, size: int, level: str | None = None, base: int | None = None, vid: str = "vol-0c"
) -> PartSpec:
    level = level or ("F" if i == 0 else "I")
    if base is None and level != "F":
        base = i - 1
    return PartSpec(
        volume_id=vid, volume_size=size, snapshot_id=f"snap-{i:04d}", created=when(i),
        level=level, base_snapshot_id=None if base is None else f"snap-{base:04d}",
        base_created=None if base is None else when(base), job_id=i + 1, chain_position=i, block_size=BS,
    )  # fmt: skip


def blob(rng: random.Random, n: int = BS) -> bytes:
    return rng.randbytes(n)


def merged(parts: list[dict[int, bytes | None]], blocks: int) -> bytes:
    img = bytearray(blocks * BS)
    for part in parts:
        for i, data in part.items():
            img[i * BS : (i + 1) * BS] = data if data is not None else bytes(BS)
    return bytes(img)


def write_chain(root: Path, parts: list[dict[int, bytes | None]], blocks: int) -> list[str]:
    paths = []
    for i, part in enumerate(parts):
        path = root / f"part{i}.bimg"
        write_part(path, spec(i, blocks * BS), sorted(part.items()))
        paths.append(str(path))
    return paths


chains = st.integers(1, 12).flatmap(
    lambda blocks: st.tuples(
        st.just(blocks),
        st.lists(
            st.dictionaries(st.integers(0, blocks - 1), st.one_of(st.none(), st.integers(0, 2**32))),
            min_size=1,
            max_size=4,
        ),
        st.randoms(use_true_random=False),
    )
)


@settings(max_examples=60, deadline=None)
@given(chains)
def test_the_view_equals_the_merged_image_and_reads_only_what_it_needs(case: tuple) -> None:
    blocks, shapes, rng = case
    parts = [
        {i: (None if v is None else random.Random(v).randbytes(BS)) for i, v in p.items()} for p in shapes
    ]
    want = merged(parts, blocks)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_chain(Path(tmp), parts, blocks)
        order = paths[:]
        rng.shuffle(order)  # the parts may be given in any order
        with ChainView(order) as view:
            headers = sum(os.path.getsize(p) for p in paths) - sum(
                sum(len(d) for d in p.values() if d is not None) for p in parts
            )
            zeros = sum(1 for p in parts for d in p.values() if d is None)
            # no block data at open (a run of zero records is read 64 headers at a time)
            assert view.bytes_read <= headers + (len(paths) + zeros) * RECORD_SIZE * 64
            assert view.size == len(want)
            opened = view.bytes_read
            for _ in range(5):
                off = rng.randrange(0, len(want))
                n = rng.randrange(0, len(want) - off + 1)
                assert view.read(off, n) == want[off : off + n]
            assert view.read(0, len(want) + 100) == want
            data_blocks = {i for i in range(blocks) if any(i in p for p in parts)}
            newest = {i: next(p[i] for p in reversed(parts) if i in p) for i in data_blocks}
            assert view.data_blocks() == sorted(i for i, d in newest.items() if d is not None)
            # each block holding data was read from its part at most once (cache), zeros never
            assert view.bytes_read - opened <= BS * len(view.data_blocks())
            assert view.blocks_read <= len(view.data_blocks())


def test_a_single_block_read_reads_one_block(tmp_path: Path) -> None:
    rng = random.Random(1)
    parts = [{i: blob(rng) for i in range(10)}, {3: blob(rng), 4: None}]
    paths = write_chain(tmp_path, parts, 10)
    with ChainView(paths) as view:
        opened = view.bytes_read
        assert opened < PREFIX_SIZE * 2 + 2000 + 14 * RECORD_SIZE * 2
        assert view.read(3 * BS + 10, 100) == parts[1][3][10:110]
        assert view.bytes_read - opened == BS
        assert view.read(4 * BS, BS) == bytes(BS)  # emptied by the Incremental: nothing read
        assert view.read(5 * BS, 1) == parts[0][5][:1]
        assert view.bytes_read - opened == 2 * BS
        assert view.owner(3) is view.parts[1] and view.owner(5) is view.parts[0]


def _corrupt(path: str, at: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(at)
        byte = fh.read(1)
        fh.seek(at)
        fh.write(bytes([byte[0] ^ 0x40]))


def test_a_damaged_block_raises_naming_part_and_block_and_the_others_still_read(tmp_path: Path) -> None:
    rng = random.Random(2)
    parts = [{i: blob(rng) for i in range(6)}]
    (path,) = write_chain(tmp_path, parts, 6)
    size = os.path.getsize(path)
    # the data of block 4 starts after the 5th record's header: find it from the end
    data_of_block_4 = size - RECORD_SIZE - 2 * (BS + RECORD_SIZE) + RECORD_SIZE
    _corrupt(path, data_of_block_4 + 100)
    with ChainView([path], ["backups/x/part0.bimg"]) as view:
        assert view.read(0, BS) == parts[0][0]
        with pytest.raises(ChainDamaged, match=r"backups/x/part0.bimg is damaged: block 4 .*SHA-256"):
            view.read(4 * BS + 5, 1)
        assert isinstance(view.failure, ChainDamaged)
        assert view.read(5 * BS, BS) == parts[0][5]


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (lambda size: PREFIX_SIZE + 5, "damaged"),  # the JSON header
        (
            lambda size: size - RECORD_SIZE - BS - RECORD_SIZE + 20,
            "end record does not match",
        ),  # a record digest
        (lambda size: size - 10, "end record does not match"),  # the end record's digest
    ],
)
def test_damaged_headers_are_refused_at_open(tmp_path: Path, where, message: str) -> None:
    rng = random.Random(3)
    (path,) = write_chain(tmp_path, [{0: blob(rng), 2: blob(rng)}], 4)
    _corrupt(path, where(os.path.getsize(path)))
    with pytest.raises(ChainDamaged, match=message):
        ChainView([path])


def test_truncated_and_extended_parts_are_refused(tmp_path: Path) -> None:
    rng = random.Random(4)
    (path,) = write_chain(tmp_path, [{0: blob(rng), 2: blob(rng)}], 4)
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:-RECORD_SIZE])
    with pytest.raises(ChainDamaged, match="truncated"):
        ChainView([path])
    Path(path).write_bytes(data[: -RECORD_SIZE - 100] + data[-RECORD_SIZE:])
    with pytest.raises(ChainDamaged):
        ChainView([path])
    Path(path).write_bytes(data + b"x")
    with pytest.raises(ChainDamaged, match="follow its end record"):
        ChainView([path])


def test_the_chain_rules_are_the_local_restores(tmp_path: Path) -> None:
    rng = random.Random(5)
    size = 4 * BS
    full, i1, i2 = (tmp_path / f"{n}.bimg" for n in ("full", "i1", "i2"))
    write_part(full, spec(0, size), [(0, blob(rng))])
    write_part(i1, spec(1, size), [(1, blob(rng))])
    write_part(i2, spec(2, size), [(2, blob(rng))])
    with pytest.raises(ChainDamaged, match="a backup is missing between"):
        ChainView([str(full), str(i2)])
    with pytest.raises(ChainDamaged, match="not the Full backup"):
        ChainView([str(i1), str(i2)])
    with pytest.raises(ChainDamaged, match=r"which .* holds too"):
        ChainView([str(full), str(i1), str(i1)])
    other = tmp_path / "other.bimg"
    write_part(other, spec(1, size, vid="vol-0other"), [(1, blob(rng))])
    with pytest.raises(ChainDamaged, match="must be of one volume"):
        ChainView([str(full), str(other)])
    # an older chain before the last Full is not part of the result
    full2 = tmp_path / "full2.bimg"
    write_part(full2, spec(3, size, level="F"), [(3, b"F" * BS)])
    fds_before = len(os.listdir("/proc/self/fd"))
    with ChainView([str(full), str(i1), str(full2)]) as view:
        assert [p.name for p in view.parts] == [str(full2)]
        assert view.read(0, size) == bytes(3 * BS) + b"F" * BS
        assert len(os.listdir("/proc/self/fd")) == fds_before + 1  # the older parts are closed
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_a_bec2_folder_chain_is_chosen_and_checked_as_a_restore_does(tmp_path: Path) -> None:
    rng = random.Random(6)
    size = 8 * BS
    root = tmp_path / "folder"
    b0 = {i: blob(rng) for i in range(8)}
    b1 = {2: blob(rng), 3: None}
    t = T0.timestamp()
    folder_backup(root, spec(0, size), sorted(b0.items()), started=t)
    second = folder_backup(root, spec(1, size), sorted(b1.items()), started=t + 86400)
    with open_folder_chain(str(root)) as view:
        assert view.read(0, size) == merged([b0, b1], 8)
        assert len(view.parts) == 2 and "backups/" in view.parts[1].name
    with open_folder_chain(str(root), before=t + 100) as view:
        assert view.read(0, size) == merged([b0], 8)
    with pytest.raises(FolderError, match=r"no backup .* holds volume vol-0nope"):
        open_folder_chain(str(root), "vol-0nope")
    with open(second, "ab") as fh:  # the manifest's size no longer matches
        fh.write(b"x")
    with pytest.raises(FolderError, match="altered"):
        open_folder_chain(str(root))
