"""Writes that stay inside a restore target (docs/RESTORE.md, "What a restore promises").

The File Daemon runs as root, and a restore directory may already hold anything, including
links planted by someone else. So a local restore never resolves a path below its target:

* the target directory is opened once (created if missing; its last component must not
  be a symbolic link), and every directory below it is opened or created relative to its
  parent's descriptor with `O_NOFOLLOW | O_DIRECTORY`: a symbolic link or a non-directory
  at any level is refused with an error naming the path;
* a file is written under a fresh temporary name (`O_CREAT | O_EXCL | O_NOFOLLOW`) in a
  directory of the target, synced, and then renamed over its final name (`os.replace`
  with directory descriptors), so an existing symbolic link or hard link at the
  destination is replaced, never written through; the directory is synced after it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from dataclasses import dataclass

from .errors import JobError

DIR_MODE = 0o750
FILE_MODE = 0o640
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMP_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(JobError):
    """A path of the restore target is a link or not a directory: nothing is written there."""


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write every byte of `data` (os.write may write less than it was given)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def check_name(name: str) -> str:
    """One path component: never empty, `.`, `..`, or containing `/` or NUL."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise UnsafePath(f"'{name}' is not a plain file or directory name")
    return name


@dataclass
class Dir:
    """An open directory of the restore target; every operation is relative to `fd`."""

    fd: int
    path: str  # for messages only; never used to reach the directory again

    def child(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _refuse(self, name: str, exc: OSError) -> UnsafePath:
        path = self.child(name)
        st = self.lstat(name)
        if st is not None and stat.S_ISLNK(st.st_mode):
            return UnsafePath(f"{path} is a symbolic link: a restore does not follow links in its target")
        return UnsafePath(f"{path} exists and is not a directory ({exc.strerror})")

    def subdir(self, name: str, create: bool = True) -> Dir | None:
        """The directory `name` below this one, created if missing and `create`; None if it
        is missing and not `create`. A symbolic link or a non-directory is refused."""
        check_name(name)
        for _ in range(3):
            try:
                return Dir(os.open(name, _DIR_FLAGS, dir_fd=self.fd), self.child(name))
            except FileNotFoundError:
                if not create:
                    return None
                with contextlib.suppress(FileExistsError):  # created meanwhile: open and check it
                    os.mkdir(name, DIR_MODE, dir_fd=self.fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise self._refuse(name, exc) from exc
                raise
        raise UnsafePath(f"{self.child(name)} keeps changing while the restore opens it")

    def lstat(self, name: str) -> os.stat_result | None:
        """The entry `name` itself (a link is not followed), or None if there is none."""
        try:
            return os.stat(check_name(name), dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def create_temp(self, stem: str, mode: int = FILE_MODE) -> tuple[int, str]:
        """A new, empty file under a name nobody else has: (descriptor, name)."""
        for _ in range(8):
            name = check_name(f".{stem}.{secrets.token_hex(6)}.tmp")
            try:
                return os.open(name, _TEMP_FLAGS, mode, dir_fd=self.fd), name
            except FileExistsError:
                continue
        raise UnsafePath(f"cannot create a temporary file in {self.path}")

    def replace(self, tmp: str, dst: Dir, name: str) -> None:
        """Rename our temporary file over `dst/name` (whatever is there is replaced, not
        written through), then sync both directories."""
        check_name(name)
        try:
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=dst.fd)
        except IsADirectoryError as exc:
            raise UnsafePath(f"{dst.child(name)} is a directory: cannot restore a file over it") from exc
        dst.fsync()
        if dst.fd != self.fd:
            self.fsync()

    def link_new(self, tmp: str, dst: Dir, name: str) -> bool:
        """Give our temporary file the name `dst/name` only if that name is free (atomic);
        the temporary name is removed either way. False if something exists there."""
        check_name(name)
        try:
            os.link(tmp, name, src_dir_fd=self.fd, dst_dir_fd=dst.fd, follow_symlinks=False)
        except FileExistsError:
            self.unlink(tmp)
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
                raise
            # A filesystem without hard links: check, then rename (not atomic, still no
            # write through a link).
            if dst.lstat(name) is not None:
                self.unlink(tmp)
                return False
            self.replace(tmp, dst, name)
            return True
        self.unlink(tmp)
        dst.fsync()
        return True

    def unlink(self, name: str) -> None:
        """Remove the entry `name` (a file or link) if it exists."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(check_name(name), dir_fd=self.fd)

    def fsync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_target(path: str) -> Dir:
    """Open (create if missing) the restore target directory.

    Its parents are the administrator's choice and are resolved normally; the target
    itself must be a real directory, not a symbolic link.
    """
    if not os.path.isabs(path):
        raise UnsafePath(f"the restore directory '{path}' is not an absolute path")
    path = os.path.normpath(path)
    parent, name = os.path.split(path)
    if not name:  # "/": nothing above it to check
        return Dir(os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), path)
    os.makedirs(parent, exist_ok=True)
    pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        target = Dir(pfd, parent).subdir(name, create=True)
    finally:
        os.close(pfd)
    assert target is not None
    return Dir(target.fd, path)
