"""Small helpers shared by the end-to-end tests and the demo."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def wait_until(condition: Callable[[], object], timeout: float, what: Callable[[], str]) -> None:
    """Poll `condition` every 50 ms; fail with `what()` when it stays false."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s: {what()}")
        time.sleep(0.05)
