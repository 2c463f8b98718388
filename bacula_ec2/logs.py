"""Backend logging: a file in the FD's working directory, never fd 2, never a secret.

The FD turns every byte on the backend's stderr into a job Error (metaplugin-protocol.md
§1.10), so the Python objects sys.stderr and sys.stdout are pointed at the log file instead
(fd 1 is the protocol channel and is written only by `protocol`), and fd 2 is left alone.

Nothing here may raise into the job: the streams use `errors="backslashreplace"` (text from
the FD is decoded with surrogateescape, and a lone surrogate makes a strict UTF-8 stream
fail), `logging.raiseExceptions` is off, and every hook that Python would use to print an
unhandled exception (main thread, other threads, "unraisable" ones) writes to the log file.
Secrets are masked in every record and every stream write: the values learned from the
parameters (`Redactor.add`) and, whatever was parsed, the value of any secret-looking
`key=value` (`protocol.text.scrub_secrets`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import logging.handlers
import os
import sys
import threading
import traceback
from types import TracebackType
from typing import Any, TextIO

from protocol.text import scrub_secrets

LOG_NAME = "bacula-ec2"
_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
#: Every text stream the backend writes: cannot raise on any str (lone surrogates included).
ERRORS = "backslashreplace"


class Redactor(logging.Filter):
    """Replaces every known secret value, and any secret-looking `key=value`, with ***."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: list[str] = []

    def add(self, *values: str) -> None:
        self.secrets.extend(v for v in values if v and len(v) >= 4 and v not in self.secrets)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return scrub_secrets(text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception as exc:  # a bad format string must not break the caller
            message = f"{record.msg!r} {record.args!r} (unformattable: {type(exc).__name__})"
        record.msg = self.scrub(message)
        record.args = None
        if record.exc_info:
            try:
                record.exc_text = self.scrub(logging.Formatter().formatException(record.exc_info))
            except Exception:
                record.exc_text = "(traceback could not be formatted)"
            record.exc_info = None
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        return True


REDACTOR = Redactor()


class _ScrubbingStream(io.TextIOBase):
    """sys.stderr / sys.stdout replacement: secrets masked, never raises."""

    def __init__(self, target: TextIO) -> None:
        self._target = target

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with contextlib.suppress(Exception):
            self._target.write(REDACTOR.scrub(str(text)))
        return len(text)

    def flush(self) -> None:
        with contextlib.suppress(Exception):
            self._target.flush()

    def isatty(self) -> bool:
        return False


def _open_text(path: str) -> TextIO:
    return open(path, "a", encoding="utf-8", errors=ERRORS)  # lives as long as the process


def _log_unhandled(where: str, exc: BaseException | None, tb: TracebackType | None) -> None:
    log = logging.getLogger(LOG_NAME)
    try:
        text = "".join(traceback.format_exception(type(exc), exc, tb)) if exc is not None else ""
    except Exception as fmt_exc:  # an exception whose traceback cannot be formatted: say so
        text = f"{type(exc).__name__} (its traceback could not be formatted: {type(fmt_exc).__name__})"
    with contextlib.suppress(Exception):  # the last resort: nothing may reach fd 2
        log.error("unhandled exception in %s: %s", where, text)


def _install_hooks() -> None:
    """Whatever Python would print to stderr on its own goes to the log instead."""
    logging.raiseExceptions = False

    def excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        _log_unhandled("the main thread", exc, tb)

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread is not None else "a thread"
        _log_unhandled(f"thread {name}", args.exc_value, args.exc_traceback)

    def unraisable_hook(args: Any) -> None:
        _log_unhandled(f"{args.err_msg or 'unraisable'} {args.object!r}", args.exc_value, args.exc_traceback)

    sys.excepthook = excepthook
    threading.excepthook = thread_hook
    sys.unraisablehook = unraisable_hook


def setup_backend_logging(working_dir: str | None, level: str | None = None) -> str | None:
    """Log to <working_dir>/bacula-ec2.log (or $BACULA_EC2_LOG), appending; returns the path
    used. The file is not rotated here: a moved or removed file is reopened at its path."""
    path = os.environ.get("BACULA_EC2_LOG") or (
        os.path.join(working_dir, "bacula-ec2.log") if working_dir else None
    )
    root = logging.getLogger()
    root.setLevel(
        getattr(logging, (level or os.environ.get("BACULA_EC2_LOG_LEVEL") or "INFO").upper(), logging.INFO)
    )
    for h in list(root.handlers):
        root.removeHandler(h)
    handler: logging.Handler
    stream: TextIO
    try:
        if path is None:
            raise OSError("no working directory")
        # Several backends (Plugin lines, concurrent jobs) append to this one file: none of
        # them rotates it (rotations racing each other lose lines); each reopens the file
        # when logrotate has moved it (packaging ships /etc/logrotate.d, docs/INSTALL.md).
        handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8", errors=ERRORS)
        stream = _open_text(path)
    except (OSError, ValueError):  # ValueError: a path with NUL
        path = None
        handler = logging.NullHandler()
        stream = _open_text(os.devnull)
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.addFilter(REDACTOR)
    root.addHandler(handler)
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    sys.stderr = sys.stdout = _ScrubbingStream(stream)
    _install_hooks()
    return path


def quiet_until_configured() -> None:
    """Before the Job block names the working directory: nothing may reach fd 1 or fd 2."""
    sink = _ScrubbingStream(_open_text(os.devnull))
    sys.stderr = sys.stdout = sink
    logging.getLogger().addHandler(logging.NullHandler())
    _install_hooks()
