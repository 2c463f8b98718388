"""The backend's log file: shared by every backend of the host, rotated from outside."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BACKEND = """
import logging, sys
from bacula_ec2.logs import setup_backend_logging
setup_backend_logging(sys.argv[1])
log = logging.getLogger("bacula-ec2.test")
log.info("before %s", sys.argv[2])
sys.__stdin__.readline()  # the test moves the file away meanwhile, as logrotate does
log.info("after %s", sys.argv[2])
"""


def logged(path: Path, word: str) -> int:
    return path.read_text().count(word) if path.exists() else 0


def test_backends_keep_appending_to_the_path_after_logrotate_moved_the_file(tmp_path: Path) -> None:
    """Two backends log to one file; logrotate renames it; both go on in a new file at the
    same path, and the old one keeps exactly what was written before (no line lost)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BACKEND, str(tmp_path), name], stdin=subprocess.PIPE, text=True
        )
        for name in ("one", "two")
    ]
    log = tmp_path / "bacula-ec2.log"
    deadline = time.monotonic() + 30
    while logged(log, "before") < 2:
        assert time.monotonic() < deadline, "the backends did not log"
        time.sleep(0.05)
    log.rename(tmp_path / "bacula-ec2.log.1")
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("\n")
        p.stdin.close()
        assert p.wait(timeout=30) == 0
    old = (tmp_path / "bacula-ec2.log.1").read_text()
    new = log.read_text()
    assert old.count("before") == 2 and "after" not in old, old
    assert "after one" in new and "after two" in new and "before" not in new, new
