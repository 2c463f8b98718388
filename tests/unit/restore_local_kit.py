"""The chains and the feeding that the LocalRestore tests share (not a test module): small
volumes (12 blocks of 4 KiB) encoded with the real codec, every part's content known by
construction, fed the way the backend feeds them and the way bec2 does."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bacula_ec2 import naming
from bacula_ec2.formats.blockimage import (
    PREFIX_SIZE,
    BlockRecord,
    FileKind,
    ImageHeader,
    RecordEncoder,
    RecordKind,
    block_sha256,
)
from bacula_ec2.jobs.context import JobContext
from bacula_ec2.jobs.restore_local import LocalRestore, RestoreFailed
from bacula_ec2.params import parse_parameters
from devkit.jobkit import Recorder

BS = 4096
BLOCKS = 12
SIZE = BLOCKS * BS
T0 = dt.datetime(2026, 11, 26, 16, 0, tzinfo=dt.UTC)
IID = "i-0aaa"
VID = "vol-0aaa"


# ---------------------------------------------------------------------------- chains


@dataclass(frozen=True)
class Built:
    name: str  # catalog path
    data: bytes
    header: ImageHeader
    content: bytes  # the whole volume at this snapshot


@dataclass
class History:
    """Every backup of one volume, oldest first."""

    parts: list[Built] = field(default_factory=list)

    def pick(self, *indexes: int) -> list[Built]:
        return [self.parts[i] for i in indexes]


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def build(
    volume_id: str,
    levels: str,
    *,
    seed: int,
    job: str = "ec2test",
    bases: dict[int, int] | None = None,
    devices: Sequence[str] | None = None,
    instances: Sequence[str] | None = None,
    first_jobid: int = 1,
    fresh: Sequence[int] = (),
) -> History:
    """Backups of a volume written to between jobs. `bases` overrides the base a job
    compared with (job index -> base job index); by default an Incremental compares with
    the previous job, a Differential with the last Full. At a job in `fresh` the volume
    starts over empty (as if its content were replaced), so a Full there lists fewer blocks
    than the chain before it."""
    rng = random.Random(seed)
    content = bytearray(SIZE)
    allocated: set[int] = set()
    written: list[set[int]] = []
    created: list[dt.datetime] = []
    history = History()
    last_full = 0
    for k, level in enumerate(levels):
        if k in fresh:
            content[:] = bytes(SIZE)
            allocated.clear()
        touched = set()
        for _ in range(rng.randint(1, 4)):
            b = rng.randrange(BLOCKS)
            data = bytes(BS) if (rng.random() < 0.25 and k) else rng.randbytes(BS)
            content[b * BS : (b + 1) * BS] = data
            touched.add(b)
            allocated.add(b)
        written.append(touched)
        created.append(T0 + dt.timedelta(minutes=k))
        base: int | None = None
        if level == "I":
            base = (bases or {}).get(k, k - 1)
        elif level == "D":
            base = (bases or {}).get(k, last_full)
        else:
            last_full = k
        blocks = sorted(allocated) if base is None else sorted(set().union(*written[base + 1 : k + 1]))
        jobid = first_jobid + k
        device = devices[k] if devices else "/dev/sda1"
        iid = instances[k] if instances else IID
        header = ImageHeader(
            kind=FileKind.IMAGE,
            volume_id=volume_id,
            volume_size=SIZE,
            snapshot_id=f"snap-{volume_id[4:]}{job[:3]}{k:03d}",
            level=level,
            created=iso(created[k]),
            base_snapshot_id=None if base is None else history.parts[base].header.snapshot_id,
            base_created=None if base is None else iso(created[base]),
            block_size=BS,
            instance_id=iid,
            device=device,
            region="us-east-1",
            job_name=f"{job}.2026-11-26_16.00.00_{jobid:02d}",
            job_id=jobid,
            chain_position=0 if base is None else history.parts[base].header.chain_position + 1,
        )
        enc = RecordEncoder(header)
        out = bytearray(enc.start())
        for b in blocks:
            data = bytes(content[b * BS : (b + 1) * BS])
            if data == bytes(BS):
                out += enc.record(BlockRecord(b * BS, BS, RecordKind.ZERO, block_sha256(data)))
            else:
                out += enc.record(BlockRecord(b * BS, BS, RecordKind.DATA, block_sha256(data))) + data
        out += enc.end()
        name = naming.volume_image(iid, volume_id, device, 1, level, jobid)
        history.parts.append(Built(name, bytes(out), header, bytes(content)))
    return history


def header_length(part: Built) -> int:
    return PREFIX_SIZE + int.from_bytes(part.data[8:12], "big")


# Bacula's selections: the last Full, the last Differential after it, the Incrementals after
# that. The 5-part chain's first Incremental after the Differential is based on the
# Differential's snapshot (the Differential keeps it for exactly that; docs/SNAPSHOTS.md);
# the Incremental before the Differential is not in the restore.
ONE = build(VID, "F", seed=1)
TWO = build(VID, "FI", seed=2)
FIVE_HISTORY = build(VID, "FIDIII", seed=5)
FIVE = History(FIVE_HISTORY.pick(0, 2, 3, 4, 5))
CHAINS = {1: ONE, 2: TWO, 5: FIVE}
OTHER_VOLUME = build("vol-0bbb", "FIDIII", seed=7)  # another chain (volume)
OTHER_JOB = build(VID, "FIDIII", seed=9, job="otherjob")  # same volume, another Job


# ---------------------------------------------------------------------------- driver


@dataclass
class Outcome:
    ok: bool
    errors: list[str]
    final: str | None  # the message of a failed finish
    reporter: Recorder


def new_restore(target: Path, replace: str = "a") -> tuple[LocalRestore, Recorder]:
    rec = Recorder()
    ctx = JobContext(parse_parameters([]), "restore.2026-11-27_10.00.00_50", 50, "F", rec, "")
    return LocalRestore(ctx, str(target), where=None, replace=replace), rec


def chunks(data: bytes, rng: random.Random) -> Iterable[bytes]:
    pos = 0
    while pos < len(data):
        n = rng.choice((1, 7, 48, 500, 4096, 5000, 65536))
        yield data[pos : pos + n]
        pos += n


def feed(
    target: Path,
    files: Sequence[tuple[str, bytes]],
    *,
    seed: int = 0,
    replace: str = "a",
    times: dict[str, int] | None = None,
) -> Outcome:
    """Like the backend: a failed file is answered with E and the restore goes on; a file
    without data is followed by the next FNAME; FINISH assembles."""
    rng = random.Random(seed)
    r, rec = new_restore(target, replace)
    errors: list[str] = []
    final = None
    try:
        for name, data in files:
            try:
                if not r.start(name, mtime=(times or {}).get(name)):
                    continue
            except RestoreFailed as exc:
                errors.append(str(exc))
                continue
            if not data:
                continue  # the FD sends no DATA for an empty file
            try:
                for chunk in chunks(data, rng):
                    r.data(memoryview(chunk))
            except RestoreFailed as exc:
                errors.append(str(exc))
                continue
            try:
                r.end()
            except RestoreFailed as exc:
                errors.append(str(exc))
        try:
            r.finish()
        except RestoreFailed as exc:
            final = str(exc)
    finally:
        r.close()
    errors += [t for s, t in rec.lines if s == "E"]
    return Outcome(final is None, errors, final, rec)


def feed_like_bec2(target: Path, files: Sequence[tuple[str, bytes]], seed: int = 0) -> str | None:
    """Like bec2: start, data, end per file, finish; the first failure abandons."""
    rng = random.Random(seed)
    r, _rec = new_restore(target)
    try:
        for name, data in files:
            if not r.start(name):
                continue
            for chunk in chunks(data, rng):
                r.data(memoryview(chunk))
            r.end()
        r.finish()
    except RestoreFailed as exc:
        r.abandon()
        return str(exc)
    return None


def files_under(target: Path) -> dict[str, Path]:
    return {str(p.relative_to(target)): p for p in target.rglob("*") if not p.is_dir() or p.is_symlink()}


def image_path(target: Path, iid: str = IID, name: str = f"{VID}-sda1-1G.img") -> Path:
    return target / "@amazon-ec2" / iid / name


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_exact(target: Path, want: bytes, iid: str = IID, name: str = f"{VID}-sda1-1G.img") -> None:
    assert set(files_under(target)) == {f"@amazon-ec2/{iid}/{name}"}, files_under(target)
    assert sha(image_path(target, iid, name).read_bytes()) == sha(want)


def assert_failed_naming(out: Outcome, target: Path, culprit: str) -> None:
    assert not out.ok, "a damaged restore must fail"
    assert out.final is not None and culprit in out.final, (culprit, out.final)
    assert VID in out.final
    assert not files_under(target), f"nothing may be left after a failure: {files_under(target)}"


def volume_doc(part: Built) -> bytes:
    h = part.header
    doc = {
        "kind": "bacula-ec2 volume",
        "volume_id": h.volume_id,
        "instance_id": h.instance_id,
        "device": h.device,
        "snapshot_id": h.snapshot_id,
        "volume": {"VolumeId": h.volume_id, "Tags": [{"Key": "job", "Value": str(h.job_id)}]},
    }
    return json.dumps(doc).encode()
