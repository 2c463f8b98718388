"""How the backend feeds the FD's pipe: the pipe's size and the D packets' size.

The FD reads a backup's data from the backend's stdout, a pipe, in reads of at most its
``Maximum Network Buffer Size`` (65536 by default), one Bacula record per read
(metaplugin-protocol.md §1.8). A Linux pipe holds 64 KiB unless its owner raises it
(``F_SETPIPE_SZ``; up to /proc/sys/fs/pipe-max-size, 1 MiB by default, for an
unprivileged process; root may go beyond). A bigger pipe lets one writev of a block reach
the pipe in one go, so the backend and bacula-fd wake each other far less often
(docs/PERFORMANCE.md, "The real-FD path", has the measurement).

Two diagnostic environment variables, read once when the backend starts (the FD's
environment reaches the backend), override what the measurement chose; they exist to
repeat that measurement, not to be set in production. A bad value is an error that names
the variable: the backend answers the FD's Hello with an A packet and the job fails.

- ``BACULA_EC2_PIPE_SIZE``: bytes (``K``/``M`` suffixes are KiB/MiB) to ask for the
  stdout pipe; ``0`` leaves the pipe as the FD made it.
- ``BACULA_EC2_DATA_PACKET``: the largest D packet payload in bytes (4096..999999);
  default: one packet per block image record (the 48-byte record header and its 512 KiB
  block, 524,336 bytes).
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from protocol.framing import MAX_PAYLOAD

PIPE_SIZE_ENV = "BACULA_EC2_PIPE_SIZE"
DATA_PACKET_ENV = "BACULA_EC2_DATA_PACKET"
#: What the backend asks for its stdout pipe unless told otherwise (the measured choice).
DEFAULT_PIPE_SIZE = 1 << 20
MIN_PACKET = 4096
#: Linux fcntl commands (Python has the constants since 3.10; the values are the ABI's).
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
#: Largest size asked for at all (the kernel reads the size as an unsigned int and rounds
#: it up to a power of two: anything at or above 2**32 would wrap to one page).
_MAX_PIPE = 1 << 30

log = logging.getLogger("bacula-ec2.fdpipe")


@dataclass(frozen=True)
class DataTuning:
    """pipe_size: bytes to ask for fd 1's pipe (0: leave it); packet: largest D payload."""

    pipe_size: int = DEFAULT_PIPE_SIZE
    packet: int = MAX_PAYLOAD


def _size(env: Mapping[str, str], name: str, low: int, high: int, default: int) -> int:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    text = raw.strip().upper().removesuffix("IB").removesuffix("B")
    scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
    digits = text[:-1] if scale != 1 else text
    if not digits.isdigit():
        raise ValueError(f"{name}={raw!r}: not a size in bytes (e.g. 65536, 64K, 1M)")
    value = int(digits) * scale
    if not low <= value <= high:
        raise ValueError(f"{name}={raw!r}: {value} bytes is outside {low}..{high}")
    return value


def from_environ(env: Mapping[str, str] | None = None) -> DataTuning:
    """The tuning the environment asks for; ValueError naming the variable for a bad one."""
    env = os.environ if env is None else env
    return DataTuning(
        pipe_size=_size(env, PIPE_SIZE_ENV, 0, _MAX_PIPE, DEFAULT_PIPE_SIZE),
        packet=_size(env, DATA_PACKET_ENV, MIN_PACKET, MAX_PAYLOAD, MAX_PAYLOAD),
    )


def pipe_size(fd: int) -> int | None:
    """The capacity of the pipe `fd` belongs to; None when `fd` is no pipe."""
    try:
        return int(fcntl.fcntl(fd, F_GETPIPE_SZ))
    except OSError:
        return None


def set_pipe_size(fd: int, size: int) -> int | None:
    """Ask for a `size`-byte pipe on `fd`; returns the capacity it has afterwards.

    Never fails: a descriptor that is no pipe, a size above what this process may ask for
    (EPERM) or above 1 GiB, a kernel without the call: the pipe stays as it was, noted at
    debug level.
    """
    if not 0 < size <= _MAX_PIPE:  # the kernel takes an unsigned int: 2**32 would be 0
        return pipe_size(fd)
    try:
        return int(fcntl.fcntl(fd, F_SETPIPE_SZ, size))
    except OSError as exc:
        log.debug("fd %d: pipe size %d not set (%s); kept %s", fd, size, exc, pipe_size(fd))
        return pipe_size(fd)


_current = DataTuning()


def current() -> DataTuning:
    """The tuning `apply` installed (the defaults before that)."""
    return _current


def apply(tuning: DataTuning, fd: int = 1) -> int | None:
    """Install `tuning` for this process and size the pipe on `fd`; returns its capacity."""
    global _current
    _current = tuning
    return set_pipe_size(fd, tuning.pipe_size)
