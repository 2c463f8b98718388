"""What the bec2 tests share (not a test module)."""

from __future__ import annotations

BLOCK = 524288
SECRET = "bec2/SECRET/key/123456789"
