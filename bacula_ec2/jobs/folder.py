"""bec2's output folder: a catalog of backups (docs/RESTORE.md, "The bec2 folder").

    <output>/bec2-folder.json                 folder marker: folder id, format version
    <output>/backups/<time>-<L>-<jobid>/      one directory per backup, never reused
        @amazon-ec2/<instance>/<file>         its files, laid out like the Bacula catalog
        bec2-backup.json                      its manifest, written last

A backup directory without its manifest is incomplete (a backup that failed, was
interrupted or is still running): restores and the base choice ignore it. The manifest
lists every file of the backup with its size and SHA-256; a restore reads only files the
manifest lists, refuses any other file in a backup it uses, and checks every byte.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import itertools
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import naming, timefmt
from ..formats.blockimage import FileKind, FormatError, ImageHeader, RecordDecoder
from . import safefs
from .context import JobError
from .sink import FileInfo

MARKER = "bec2-folder.json"
BACKUPS = "backups"
MANIFEST = "bec2-backup.json"
FOLDER_KIND, FOLDER_VERSION = "bec2 folder", 1
MANIFEST_KIND, MANIFEST_VERSION = "bec2 backup", 1
COMPLETE, INCOMPLETE, DAMAGED = "complete", "incomplete", "damaged"
LEVEL_NAMES = naming.LEVEL_NAMES

_DIR_NAME = re.compile(r"^(?P<time>\d{8}T\d{6}Z)-(?P<level>[FID])-(?P<jobid>\d+)$")
_FOLDER_ID = re.compile(r"^[0-9a-f]{16}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class FolderError(JobError):
    """The folder (or one of its backups) cannot be used; the message says why."""


def iso(epoch: float) -> str:
    """`2026-11-26T16:01:42.123456Z`."""
    return timefmt.utc_iso(epoch, timespec="microseconds")


def parse_time(text: str) -> float:
    """ISO 8601 (a space may replace the T); without a zone it is UTC."""
    return timefmt.parse_iso(text).timestamp()


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_part(tmp: str) -> int:
    """A new temporary file of the folder (never an existing name, never through a link)."""
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)


def _install_part(fd: int, tmp: str, path: str, mtime: int | None = None) -> None:
    """Sync and close `fd` (a file opened by `_open_part` as `tmp`), then give it the name
    `path` only if that name is free; `tmp` is removed either way. FileExistsError if
    `path` exists."""
    try:
        try:
            os.fsync(fd)
            if mtime is not None:
                os.utime(fd, (mtime, mtime))
        finally:
            os.close(fd)
        os.link(tmp, path)
    finally:
        os.unlink(tmp)


def _write_new(path: str, data: bytes) -> None:
    """Write a small file under a new name: `.part`, fsync, link (never over an existing
    file), fsync the directory. FileExistsError if `path` exists."""
    tmp = f"{path}.{secrets.token_hex(4)}.part"
    fd = _open_part(tmp)
    try:
        safefs.write_all(fd, data)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    _install_part(fd, tmp, path)
    _fsync_dir(os.path.dirname(path))


def _rel(root: str, path: str) -> str:
    return os.path.relpath(path, root)


# ---------------------------------------------------------------------- the folder


@dataclass(frozen=True)
class Folder:
    root: str  # absolute path of --output
    folder_id: str
    created: str

    @property
    def default_job(self) -> str:
        """The chain identity of the folder's backups unless --job_name says otherwise."""
        return f"bec2-{self.folder_id}"

    @property
    def backups_dir(self) -> str:
        return os.path.join(self.root, BACKUPS)

    @property
    def marker(self) -> str:
        return os.path.join(self.root, MARKER)

    def show(self, path: str) -> str:
        """A path of the folder as messages name it (relative to the folder)."""
        return _rel(self.root, path)


def _legacy_error(root: str) -> FolderError | None:
    if os.path.isdir(os.path.join(root, naming.NAMESPACE)) and not os.path.lexists(
        os.path.join(root, MARKER)
    ):
        return FolderError(
            f"{root} holds a backup written by bec2 0.1 ({naming.NAMESPACE}/ directly in the folder, no "
            f"{MARKER}); this bec2 cannot read or extend that layout: restore it with bec2 0.1, and "
            "back up into a new folder"
        )
    return None


def open_folder(root: str) -> Folder:
    """The folder at `root`, or FolderError saying why it is not a bec2 folder."""
    legacy = _legacy_error(root)
    if legacy is not None:
        raise legacy
    marker = os.path.join(root, MARKER)
    try:
        with open(marker, "rb") as fh:
            raw = fh.read(1 << 16)
    except FileNotFoundError as exc:
        raise FolderError(
            f"no bacula-ec2 backup found under {root} (no {MARKER}: bec2 never backed up there)"
        ) from exc
    except OSError as exc:
        raise FolderError(f"{marker} cannot be read: {exc}") from exc
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("kind") != FOLDER_KIND:
            raise ValueError(f"its kind is not '{FOLDER_KIND}'")
        version = doc.get("version")
        if not isinstance(version, int) or version < 1:
            raise ValueError("it has no format version")
        if version > FOLDER_VERSION:
            raise ValueError(
                f"it has format version {version}, written by a newer bec2 (this one reads {FOLDER_VERSION})"
            )
        folder_id = doc.get("folder_id")
        if not isinstance(folder_id, str) or not _FOLDER_ID.match(folder_id):
            raise ValueError("its folder_id is missing or malformed")
        created = str(doc.get("created", ""))
    except ValueError as exc:
        raise FolderError(f"{marker} is not a bec2 folder marker: {exc}") from exc
    return Folder(os.path.abspath(root), folder_id, created)


def create_folder(root: str, now: float) -> Folder:
    """The folder at `root`, made a bec2 folder (marker written) if it is not one yet."""
    legacy = _legacy_error(root)
    if legacy is not None:
        raise legacy
    os.makedirs(root, exist_ok=True)
    marker = os.path.join(root, MARKER)
    if not os.path.lexists(marker):
        doc = {
            "kind": FOLDER_KIND,
            "version": FOLDER_VERSION,
            "folder_id": secrets.token_hex(8),
            "created": iso(now),
        }
        # FileExistsError: another bec2 created it at the same moment; use theirs
        with contextlib.suppress(FileExistsError):
            _write_new(marker, (json.dumps(doc, indent=1) + "\n").encode())
    return open_folder(root)


@contextlib.contextmanager
def backup_lock(folder: Folder) -> Iterator[None]:
    """One backup at a time per folder (a flock on the marker, released if bec2 dies)."""
    fd = os.open(folder.marker, os.O_RDWR | os.O_NOFOLLOW)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise FolderError(
                f"another bec2 backup is writing into {folder.root}: run one backup at a time per folder"
            ) from exc
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- what a backup holds


@dataclass(frozen=True)
class StoredFile:
    path: str  # catalog path, /@amazon-ec2/<folder>/<name>
    size: int
    sha256: str
    mtime: int  # the file's time in the backup (Replace=ifnewer/ifolder, restored mtime)


@dataclass(frozen=True)
class StoredVolume:
    """One volume of a backup, as its block image header describes it."""

    volume_id: str
    folder: str  # the directory under /@amazon-ec2/: instance id, or naming.STANDALONE
    instance_id: str | None
    device: str | None
    volume_size: int
    snapshot_id: str
    created: str  # snapshot start time
    base_snapshot_id: str | None
    base_created: str | None
    chain_position: int
    image: str  # catalog path of its .bimg

    @property
    def starts_chain(self) -> bool:
        """It read every block (a Full, or no base was left): it restores on its own."""
        return self.base_snapshot_id is None

    def to_json(self) -> dict[str, Any]:
        return {
            "volume_id": self.volume_id,
            "folder": self.folder,
            "instance_id": self.instance_id,
            "device": self.device,
            "volume_size": self.volume_size,
            "snapshot_id": self.snapshot_id,
            "created": self.created,
            "base_snapshot_id": self.base_snapshot_id,
            "base_created": self.base_created,
            "chain_position": self.chain_position,
            "image": self.image,
        }


@dataclass
class Backup:
    """One directory of `backups/`: complete (manifest read), incomplete or damaged."""

    name: str
    path: str
    status: str
    job_id: int | None = None
    level: str | None = None
    started: float | None = None
    finished: float | None = None
    job: str | None = None  # chain identity (Bacula Job resource name)
    job_name: str | None = None  # unique job name
    instances: tuple[str, ...] = ()
    volumes: tuple[StoredVolume, ...] = ()
    files: tuple[StoredFile, ...] = ()
    problem: str | None = None
    disk_bytes: int = 0  # what is on disk (for incomplete or damaged backups)

    @property
    def complete(self) -> bool:
        return self.status == COMPLETE

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files) if self.complete else self.disk_bytes

    def local(self, catalog_path: str) -> str:
        return os.path.join(self.path, catalog_path.lstrip("/"))

    def describe(self) -> str:
        level = LEVEL_NAMES.get(self.level or "", "backup")
        when = f" of {iso(self.started)}" if self.started is not None else ""
        return f"{level} job {self.job_id}{when} ({BACKUPS}/{self.name})"


def _name_fields(name: str) -> tuple[float | None, str | None, int | None]:
    m = _DIR_NAME.match(name)
    if not m:
        return None, None, None
    when = dt.datetime.strptime(m["time"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC).timestamp()
    return when, m["level"], int(m["jobid"])


def _disk_bytes(path: str) -> int:
    total = 0
    for top, _dirs, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(top, name)).st_size
            except OSError:
                continue
    return total


def _get(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
    value = doc.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ValueError(f"'{key}' is missing or not a {getattr(kind, '__name__', kind)}")
    return value


def _catalog_file(path: str) -> naming.CatalogPath:
    cat = naming.parse_catalog_path(path)
    if cat.kind == "dir" or ".." in cat.relative.split("/"):
        raise ValueError(f"'{path}' is not a file path this plugin writes")
    return cat


def _parse_manifest(folder: Folder, backup: Backup, raw: bytes) -> None:
    doc = json.loads(raw)
    if not isinstance(doc, dict) or doc.get("kind") != MANIFEST_KIND:
        raise ValueError(f"its kind is not '{MANIFEST_KIND}'")
    version = _get(doc, "version", int)
    if version > MANIFEST_VERSION:
        raise ValueError(f"manifest version {version}: written by a newer bec2")
    if doc.get("folder_id") != folder.folder_id:
        raise ValueError(
            f"it belongs to folder {doc.get('folder_id')!r}, not to this one ({folder.folder_id}): "
            "a backup copied from another folder"
        )
    level = _get(doc, "level", str)
    if level not in LEVEL_NAMES:
        raise ValueError(f"unknown level {level!r}")
    files = []
    for item in _get(doc, "files", list):
        path = _get(item, "path", str)
        _catalog_file(path)
        digest = _get(item, "sha256", str)
        if not _HEX64.match(digest):
            raise ValueError(f"the SHA-256 of {path} is malformed")
        files.append(StoredFile(path, _get(item, "size", int), digest, _get(item, "mtime", int)))
    paths = {f.path for f in files}
    if len(paths) != len(files):
        raise ValueError("a file is listed twice")
    volumes = []
    for item in _get(doc, "volumes", list):
        image = _get(item, "image", str)
        if image not in paths:
            raise ValueError(f"the block image {image} is not among its files")
        volumes.append(
            StoredVolume(
                volume_id=_get(item, "volume_id", str),
                folder=_get(item, "folder", str),
                instance_id=_get(item, "instance_id", str, optional=True),
                device=_get(item, "device", str, optional=True),
                volume_size=_get(item, "volume_size", int),
                snapshot_id=_get(item, "snapshot_id", str),
                created=_get(item, "created", str),
                base_snapshot_id=_get(item, "base_snapshot_id", str, optional=True),
                base_created=_get(item, "base_created", str, optional=True),
                chain_position=_get(item, "chain_position", int),
                image=image,
            )
        )
    if len({v.volume_id for v in volumes}) != len(volumes):
        raise ValueError("a volume is listed twice")
    backup.job_id = _get(doc, "job_id", int)
    backup.level = level
    backup.started = parse_time(_get(doc, "started", str))
    backup.finished = parse_time(_get(doc, "finished", str))
    backup.job = _get(doc, "job", str)
    backup.job_name = _get(doc, "job_name", str)
    backup.instances = tuple(str(i) for i in _get(doc, "instances", list))
    backup.volumes = tuple(volumes)
    backup.files = tuple(files)
    backup.status = COMPLETE


def scan(folder: Folder) -> list[Backup]:
    """Every directory of `backups/`, oldest first (complete ones by start time)."""
    try:
        names = sorted(os.listdir(folder.backups_dir))
    except FileNotFoundError:
        return []
    found: list[Backup] = []
    for name in names:
        path = os.path.join(folder.backups_dir, name)
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            continue
        when, level, job_id = _name_fields(name)
        manifest = os.path.join(path, MANIFEST)
        backup = Backup(name, path, INCOMPLETE, job_id=job_id, level=level, started=when)
        try:
            fd = os.open(manifest, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            if when is None:
                continue  # not a backup directory (the name is not one bec2 gives)
            backup.problem = f"no {MANIFEST}: the backup did not finish (failed, interrupted or running)"
            backup.disk_bytes = _disk_bytes(path)
            found.append(backup)
            continue
        except OSError as exc:
            backup.status, backup.problem = DAMAGED, f"{MANIFEST} cannot be opened: {exc}"
            found.append(backup)
            continue
        try:
            with os.fdopen(fd, "rb") as fh:
                raw = fh.read()
            _parse_manifest(folder, backup, raw)
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            backup.status = DAMAGED
            backup.problem = f"{MANIFEST} is unreadable: {exc}"
            backup.disk_bytes = _disk_bytes(path)
        found.append(backup)
    by_id: dict[int, list[Backup]] = {}
    for b in found:
        if b.complete and b.job_id is not None:
            by_id.setdefault(b.job_id, []).append(b)
    for job_id, same in by_id.items():
        if len(same) > 1:
            where = ", ".join(f"{BACKUPS}/{b.name}" for b in same)
            for b in same:
                b.status, b.problem = DAMAGED, f"job id {job_id} appears in more than one backup ({where})"
    # Job ids count up in a folder (one backup at a time): their order is the time order,
    # also within one second, where a name's time (all an incomplete backup has) is too coarse.
    found.sort(key=lambda b: (b.job_id is None, b.job_id or 0, b.started or 0.0, b.name))
    return found


def reference_backup(backups: list[Backup], level: str, job: str) -> Backup | None:
    """What Bacula would name as PrevJobName: the newest complete backup of the chain
    (Incremental) or its newest complete Full (Differential)."""
    usable = [b for b in backups if b.complete and b.job == job and (level == "I" or b.level == "F")]
    return max(usable, key=lambda b: (b.started or 0.0, b.job_id or 0), default=None)


# ---------------------------------------------------------------------- writing a backup


class _FolderWriter:
    """Writes `<name>.part` and links it to its name on close (never over an existing
    file); counts and hashes every byte for the manifest."""

    def __init__(self, sink: BackupDirectory, path: str, info: FileInfo) -> None:
        self.sink = sink
        self.path = path
        self.info = info
        self.tmp = path + ".part"
        self.size = 0
        self.digest = hashlib.sha256()
        self.fd = _open_part(self.tmp)

    def write(self, *parts: bytes | bytearray | memoryview) -> None:
        for part in parts:
            self.digest.update(part)
            self.size += len(part)
            safefs.write_all(self.fd, part)

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        try:
            _install_part(fd, self.tmp, self.path, self.info.mtime)
        except FileExistsError as exc:
            raise JobError(f"{self.sink.show(self.path)} was written twice in one backup") from exc
        finally:
            self.sink.open = None
        self.sink.written.append(
            StoredFile(self.info.path, self.size, self.digest.hexdigest(), self.info.mtime)
        )

    def discard(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if os.path.lexists(self.tmp):
            os.unlink(self.tmp)


class BackupDirectory:
    """BackupSink for one backup: `backups/<time>-<L>-<jobid>/@amazon-ec2/<folder>/<file>`.

    The directory is created (exclusively) with a job id one above every job id of the
    folder; call it under `backup_lock`.
    """

    def __init__(self, folder: Folder, level: str, started: float, known: list[Backup]) -> None:
        self.folder = folder
        self.level = level
        self.started = started
        os.makedirs(folder.backups_dir, exist_ok=True)
        job_id = 1 + max((b.job_id or 0 for b in known), default=0)
        stamp = dt.datetime.fromtimestamp(started, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        while True:
            name = f"{stamp}-{level}-{job_id}"
            try:
                os.mkdir(os.path.join(folder.backups_dir, name), 0o750)
                break
            except FileExistsError:
                job_id += 1
        self.job_id = job_id
        self.name = name
        self.path = os.path.join(folder.backups_dir, name)
        _fsync_dir(folder.backups_dir)
        self.written: list[StoredFile] = []
        self.open: _FolderWriter | None = None

    def show(self, path: str) -> str:
        return self.folder.show(path)

    def local(self, catalog_path: str) -> str:
        try:
            cat = naming.parse_catalog_path(catalog_path)
        except ValueError as exc:
            raise JobError(f"refusing to write {catalog_path!r}: {exc}") from exc
        if ".." in cat.relative.split("/") or "\0" in catalog_path:
            raise JobError(f"refusing to write {catalog_path!r} outside the backup directory")
        return os.path.join(self.path, catalog_path.lstrip("/"))

    # BackupSink
    def file(self, info: FileInfo, data: bytes) -> None:
        w = self.open_file(info)
        w.write(data)
        w.close()

    def open_file(self, info: FileInfo) -> _FolderWriter:
        if self.open is not None:
            raise JobError(f"{self.open.info.path} is still being written")
        path = self.local(info.path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.open = _FolderWriter(self, path, info)
        return self.open

    def directory(self, path: str, mtime: int) -> None:
        os.makedirs(self.local(path), exist_ok=True)

    # end of the backup
    def sync(self) -> None:
        """Every directory of the backup durable (the files were synced when closed)."""
        for top, _dirs, _names in os.walk(self.path, topdown=False):
            _fsync_dir(top)

    def volumes(self) -> list[StoredVolume]:
        """The volumes of this backup, from the headers of the block images it wrote."""
        found = []
        for f in self.written:
            cat = naming.parse_catalog_path(f.path)
            if cat.kind != "bimg":
                continue
            h = read_header(self.local(f.path))
            found.append(
                StoredVolume(
                    volume_id=h.volume_id,
                    folder=cat.instance_id,
                    instance_id=h.instance_id,
                    device=h.device,
                    volume_size=h.volume_size,
                    snapshot_id=h.snapshot_id,
                    created=h.created,
                    base_snapshot_id=h.base_snapshot_id,
                    base_created=h.base_created,
                    chain_position=h.chain_position,
                    image=f.path,
                )
            )
        seen: dict[str, str] = {}
        for v in found:
            if v.volume_id in seen:
                raise JobError(
                    f"volume {v.volume_id} was backed up twice in one backup (under {seen[v.volume_id]} and "
                    f"{v.folder}: attached to both, Multi-Attach?); a bec2 folder keeps one chain per "
                    "volume: exclude it from one of them (exclude_volumes=)"
                )
            seen[v.volume_id] = v.folder
        return found

    def write_manifest(self, doc: dict[str, Any]) -> None:
        """The last file of a backup: from now on it is complete."""
        data = (json.dumps(doc, indent=1, sort_keys=False) + "\n").encode()
        _write_new(os.path.join(self.path, MANIFEST), data)
        _fsync_dir(self.folder.backups_dir)

    def abandon(self) -> None:
        """The backup failed: the file being written and then the whole directory go."""
        if self.open is not None:
            self.open.discard()
            self.open = None

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if os.path.lexists(self.path):
            raise FolderError(f"could not remove the incomplete backup {self.show(self.path)}")


def manifest(
    folder: Folder,
    bdir: BackupDirectory,
    *,
    job: str,
    job_name: str,
    level: str,
    requested_level: str,
    finished: float,
    reference: Backup | None,
    region: str | None,
    version: str,
) -> dict[str, Any]:
    volumes = bdir.volumes()
    instances = sorted(
        {naming.parse_catalog_path(f.path).instance_id for f in bdir.written} - {naming.STANDALONE}
    )
    return {
        "kind": MANIFEST_KIND,
        "version": MANIFEST_VERSION,
        "bec2_version": version,
        "folder_id": folder.folder_id,
        "job": job,
        "job_name": job_name,
        "job_id": bdir.job_id,
        "level": level,
        "requested_level": requested_level,
        "started": iso(bdir.started),
        "finished": iso(finished),
        "reference_job": reference.job_name if reference else None,
        "reference_job_id": reference.job_id if reference else None,
        "region": region,
        "instances": instances,
        "volumes": [v.to_json() for v in volumes],
        "files": [
            {"path": f.path, "size": f.size, "sha256": f.sha256, "mtime": f.mtime} for f in bdir.written
        ],
        "bytes": sum(f.size for f in bdir.written),
    }


def read_header(local: str) -> ImageHeader:
    """The header of a stored block image, from its first bytes; FormatError if there is
    none (empty, truncated inside the header, not a block image)."""
    decoder = RecordDecoder(expect=FileKind.IMAGE)
    fd = os.open(local, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fh:
        while decoder.header is None and (chunk := fh.read(65536)):
            for _ in decoder.feed(chunk):
                break
    if decoder.header is None:
        raise FormatError("it has no complete block image header (empty, truncated or not a .bimg)")
    return decoder.header


# ---------------------------------------------------------------------- choosing a restore


@dataclass(frozen=True)
class RestoreItem:
    backup: Backup
    file: StoredFile

    @property
    def local(self) -> str:
        return self.backup.local(self.file.path)


@dataclass
class RestorePlan:
    items: list[RestoreItem] = field(default_factory=list)
    chains: dict[str, list[tuple[Backup, StoredVolume]]] = field(default_factory=dict)

    @property
    def backups(self) -> list[Backup]:
        """The backups the restore reads files of, oldest first."""
        seen: dict[str, Backup] = {}
        for item in self.items:
            seen.setdefault(item.backup.name, item.backup)
        return sorted(seen.values(), key=lambda b: (b.started or 0.0, b.job_id or 0))


def _bacula_chain(parts: list[tuple[Backup, StoredVolume]]) -> list[tuple[Backup, StoredVolume]]:
    """Bacula's selection among one volume's parts (oldest first): the last part that
    starts a chain (a Full), the last Differential after it, the Incrementals after that."""
    starts = [i for i, (_b, v) in enumerate(parts) if v.starts_chain]
    if not starts:
        return []
    rest = parts[starts[-1] + 1 :]
    diffs = [i for i, (b, _v) in enumerate(rest) if b.level == "D"]
    picked = [parts[starts[-1]]]
    if diffs:
        picked.append(rest[diffs[-1]])
        rest = rest[diffs[-1] + 1 :]
    return picked + [x for x in rest if x[0].level == "I"]


def _gap(chain: list[tuple[Backup, StoredVolume]]) -> tuple[StoredVolume, StoredVolume] | None:
    """The first part that builds on a snapshot newer than the part before it (the
    restore's own chain rule): (part before, part), or None."""
    for (_pb, prev), (_b, part) in itertools.pairwise(chain):
        if part.base_created is None or parse_time(part.base_created) > parse_time(prev.created):
            return prev, part
    return None


def _linked_chain(parts: list[tuple[Backup, StoredVolume]]) -> list[tuple[Backup, StoredVolume]]:
    """From the newest part back along each part's base snapshot to a chain start; [] if
    a base is not among the parts."""
    by_snapshot = {v.snapshot_id: (b, v) for b, v in parts}
    out = [parts[-1]]
    while not out[-1][1].starts_chain:
        here = out[-1][1]
        found = by_snapshot.get(here.base_snapshot_id or "")
        if found is None or parse_time(found[1].created) >= parse_time(here.created):
            return []
        out.append(found)
    return out[::-1]


def _chain(vid: str, parts: list[tuple[Backup, StoredVolume]]) -> list[tuple[Backup, StoredVolume]]:
    """The parts restoring one volume's newest state among `parts` (oldest first): Bacula's
    selection, or, where that leaves a gap (a Differential whose base was not the last
    Full, because that Full did not hold the volume), the parts its bases link to."""
    picked = _bacula_chain(parts)
    if picked and _gap(picked) is None:
        return picked
    linked = _linked_chain(parts)
    if linked:
        return linked
    if not picked:
        first_b, first_v = parts[0]
        raise FolderError(
            f"volume {vid}: no Full backup of it before the restore time: its oldest backup, "
            f"{first_b.describe()}, builds on snapshot {first_v.base_snapshot_id}"
        )
    gap = _gap(picked)
    assert gap is not None
    prev, part = gap
    raise FolderError(
        f"volume {vid}: a backup is missing from its chain: the part of snapshot {part.snapshot_id} builds "
        f"on snapshot {part.base_snapshot_id} of {part.base_created}, newer than the part before it "
        f"(snapshot {prev.snapshot_id} of {prev.created}), and no complete backup holds that snapshot"
    )


def plan_restore(folder: Folder, backups: list[Backup], before: float | None) -> RestorePlan:
    """What a restore reads, per volume as Bacula selects it, or FolderError saying why
    there is nothing to restore. JSON files and block maps come from the newest backup
    of each volume's selection (the instance JSON from the newest of its volumes')."""
    damaged = [b for b in backups if b.status == DAMAGED]
    if damaged:
        raise FolderError(
            "; ".join(f"{BACKUPS}/{b.name} is damaged: {b.problem}" for b in damaged)
            + f" (move it out of {folder.show(folder.backups_dir)}/ to restore from the other backups)"
        )
    complete = [b for b in backups if b.complete]
    if not complete:
        incomplete = len(backups)
        note = f" ({incomplete} incomplete backup(s) are ignored)" if incomplete else ""
        raise FolderError(f"no complete backup in {folder.root}{note}: nothing to restore")
    usable = [b for b in complete if before is None or (b.started is not None and b.started < before)]
    if not usable:
        oldest = complete[0]
        raise FolderError(
            f"no backup in {folder.root} started before {iso(before or 0)}: the oldest complete one is "
            f"{oldest.describe()}"
        )
    parts: dict[tuple[str, str], list[tuple[Backup, StoredVolume]]] = {}
    per_volume: dict[str, list[tuple[Backup, StoredVolume]]] = {}
    for b in usable:
        for v in b.volumes:
            per_volume.setdefault(v.volume_id, []).append((b, v))
    plan = RestorePlan()
    problems = []
    for vid in sorted(per_volume):
        try:
            chain = _chain(vid, per_volume[vid])
        except FolderError as exc:
            problems.append(str(exc))
            continue
        plan.chains[vid] = chain
        parts[(chain[-1][1].folder, vid)] = chain
    if problems:
        raise FolderError("; ".join(problems))
    if not parts:
        newest = usable[-1]
        raise FolderError(
            f"no disk image to restore: the backups selected in {folder.root} (newest: {newest.describe()}) "
            "hold no block image (every volume was excluded)"
        )
    # Instances: the JSON of the newest backup among their volumes' selections, and the
    # instances of the newest backup that hold no volume (configuration only).
    newest_of: dict[str, Backup] = {}
    for (folder_name, _vid), chain in parts.items():
        b = chain[-1][0]
        if folder_name not in newest_of or (b.started or 0.0) > (newest_of[folder_name].started or 0.0):
            newest_of[folder_name] = b
    for iid in usable[-1].instances:
        newest_of.setdefault(iid, usable[-1])
    for folder_name in sorted(newest_of):
        b = newest_of[folder_name]
        for f in b.files:
            if f.path == naming.instance_json(folder_name):
                plan.items.append(RestoreItem(b, f))
    for (folder_name, vid), chain in sorted(parts.items()):
        newest_b = chain[-1][0]
        own = [(f, _catalog_file(f.path)) for f in newest_b.files]
        config = [f for f, c in own if c.instance_id == folder_name and c.volume_id == vid]
        plan.items += [RestoreItem(newest_b, f) for f in config if f.path.endswith(".json")]
        for b, v in chain:
            plan.items.append(RestoreItem(b, next(f for f in b.files if f.path == v.image)))
        plan.items += [RestoreItem(newest_b, f) for f in config if not f.path.endswith((".json", ".bimg"))]
    return plan


def check_plan(folder: Folder, plan: RestorePlan) -> None:
    """Before anything is written: every backup the restore reads holds exactly the files
    its manifest lists (no other file, no link), each of the listed size, and each block
    image's header names the volume, snapshot and job the manifest says."""
    for b in plan.backups:
        listed = {f.path.lstrip("/") for f in b.files} | {MANIFEST}
        for top, dirs, names in os.walk(b.path):
            for name in dirs + names:
                path = os.path.join(top, name)
                rel = os.path.relpath(path, b.path)
                st = os.lstat(path)
                if stat.S_ISDIR(st.st_mode):
                    continue
                if not stat.S_ISREG(st.st_mode):
                    raise FolderError(
                        f"{folder.show(path)} is not a regular file (a link?): refusing to restore"
                    )
                if rel not in listed:
                    raise FolderError(
                        f"{folder.show(path)} is not part of {b.describe()} (not in its {MANIFEST}): "
                        "a file was added to the backup; refusing to restore"
                    )
    images = {v.image: v for _vid, chain in plan.chains.items() for _b, v in chain}
    for item in plan.items:
        shown = folder.show(item.local)
        try:
            st = os.lstat(item.local)
        except FileNotFoundError as exc:
            raise FolderError(f"{shown} is missing ({item.backup.describe()} lists it)") from exc
        if not stat.S_ISREG(st.st_mode):
            raise FolderError(f"{shown} is not a regular file (a link?): refusing to restore")
        if st.st_size != item.file.size:
            raise FolderError(
                f"{shown} is {st.st_size} bytes, its manifest says {item.file.size}: "
                f"{'truncated' if st.st_size < item.file.size else 'altered'}; refusing to restore"
            )
        vol = images.get(item.file.path)
        if vol is None:  # JSON and maps are small: check their bytes now, before any image is built
            digest = hashlib.sha256()
            fd = os.open(item.local, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
            if digest.hexdigest() != item.file.sha256:
                raise FolderError(
                    f"{shown} differs from its manifest (SHA-256 {digest.hexdigest()}, the manifest says "
                    f"{item.file.sha256}): it was damaged after the backup; refusing to restore"
                )
            continue
        try:
            h = read_header(item.local)
        except (FormatError, OSError) as exc:
            raise FolderError(f"{shown} is damaged: {exc}") from exc
        want = (vol.volume_id, vol.snapshot_id, item.backup.job_id, item.backup.level)
        got = (h.volume_id, h.snapshot_id, h.job_id, h.level)
        if got != want:
            raise FolderError(
                f"{shown} holds volume {h.volume_id} snapshot {h.snapshot_id} of job {h.job_id} ({h.level}), "
                f"its manifest says volume {want[0]} snapshot {want[1]} of job {want[2]} ({want[3]}): "
                "the file was replaced; refusing to restore"
            )


# ---------------------------------------------------------------------- list


def listing(folder: Folder, backups: list[Backup], verbose: bool = False) -> list[str]:
    """`bec2 --operation=list`: one line per backup, columns aligned."""
    head = ("JOBID", "STARTED (UTC)", "LEVEL", "STATUS", "SIZE", "VOLUMES", "JOB", "INSTANCES")
    rows: list[tuple[str, ...]] = []
    details: dict[int, list[str]] = {}
    for b in backups:
        started = "-" if b.started is None else iso(b.started)[:19].replace("T", " ")
        vols = str(len(b.volumes)) if b.complete else "-"
        instances = ",".join(b.instances) if b.instances else "-"
        rows.append(
            (
                str(b.job_id) if b.job_id is not None else "-",
                started,
                LEVEL_NAMES.get(b.level or "", "-"),
                b.status,
                human_size(b.size),
                vols,
                b.job or "-",
                instances,
            )
        )
        lines = []
        if verbose or not b.complete:
            lines.append(f"directory {BACKUPS}/{b.name}")
        if b.problem:
            lines.append(b.problem)
        if verbose:
            for v in b.volumes:
                base = v.base_snapshot_id or "none (every block read)"
                image = next((f.size for f in b.files if f.path == v.image), 0)
                lines.append(
                    f"{v.volume_id} ({v.folder}, {naming.device_short_name(v.device or '')}, "
                    f"{v.volume_size >> 30} GiB): snapshot {v.snapshot_id}, base {base}, "
                    f"image {human_size(image)}"
                )
        details[len(rows) - 1] = lines
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    right = {0, 4, 5}

    def fmt(row: tuple[str, ...]) -> str:
        cells = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    out = [f"bec2 folder {folder.root} (id {folder.folder_id}, job {folder.default_job})", fmt(head)]
    for i, row in enumerate(rows):
        out.append(fmt(row))
        out += [f"{'':>{widths[0]}}  {line}" for line in details.get(i, [])]
    if not rows:
        out.append("(no backups)")
    return out


def human_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
