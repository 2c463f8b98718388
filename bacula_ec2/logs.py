"""Backend logging: a file in the FD's working directory, never fd 2, never a secret.

The FD turns every byte on the backend's stderr into a job Error (metaplugin-protocol.md
§1.10), so the Python object sys.stderr is pointed at the log file instead, and fd 2 is
left alone.
"""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import sys
from typing import TextIO

LOG_NAME = "bacula-ec2"
_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


class Redactor(logging.Filter):
    """Replaces every known secret value in a record with ***."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: list[str] = []

    def add(self, *values: str) -> None:
        self.secrets.extend(v for v in values if v and len(v) >= 4 and v not in self.secrets)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = self.scrub(record.getMessage())
            record.args = None
            if record.exc_info:
                record.exc_text = self.scrub(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        return True


REDACTOR = Redactor()


class _ScrubbingStream(io.TextIOBase):
    """sys.stderr replacement: tracebacks printed by threads also lose their secrets."""

    def __init__(self, target: TextIO) -> None:
        self._target = target

    def write(self, text: str) -> int:
        return self._target.write(REDACTOR.scrub(text))

    def flush(self) -> None:
        self._target.flush()


def setup_backend_logging(working_dir: str | None, level: str | None = None) -> str | None:
    """Log to <working_dir>/bacula-ec2.log (or $BACULA_EC2_LOG); returns the path used."""
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
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=20 << 20, backupCount=3)
        stream = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    except OSError:
        path = None
        handler = logging.NullHandler()
        stream = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.addFilter(REDACTOR)
    root.addHandler(handler)
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    sys.stderr = _ScrubbingStream(stream)
    return path


def quiet_until_configured() -> None:
    """Before the Job block names the working directory: nothing may reach fd 2."""
    sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    logging.getLogger().addHandler(logging.NullHandler())
