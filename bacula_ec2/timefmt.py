"""Times as the product writes and reads them: ISO 8601 in UTC with a `Z`, or epoch seconds.

One parser and one formatter for every module (headers, manifests, lease tags, EC2
descriptions, `--before`), so a time written anywhere reads back the same everywhere.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import time

_MIN = dt.datetime.min.replace(tzinfo=dt.UTC)


def utc_iso(when: dt.datetime | float | None = None, timespec: str = "auto") -> str:
    """`2026-11-26T16:01:42.123456Z` (`timespec` as datetime.isoformat); None means now."""
    if when is None:
        when = time.time()
    if not isinstance(when, dt.datetime):
        when = dt.datetime.fromtimestamp(when, dt.UTC)
    return when.astimezone(dt.UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_iso(text: str) -> dt.datetime:
    """ISO 8601; `Z` or an offset, a space in place of the `T`; no zone means UTC.

    Raises ValueError for anything else.
    """
    value = text.strip().replace("Z", "+00:00")
    if "T" not in value and " " in value:
        value = value.replace(" ", "T", 1)
    when = dt.datetime.fromisoformat(value)
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def parse_iso_or_min(text: str | None) -> dt.datetime:
    """`parse_iso`, with None or an empty text as the earliest time there is."""
    return parse_iso(text) if text else _MIN


def epoch(when: dt.datetime | None, default: int | None = None) -> int:
    """Whole epoch seconds; None (or datetime.min) gives `default`, or now without one."""
    if when is None or when.year <= 1:
        return int(time.time()) if default is None else default
    return int(when.timestamp())


def parse_http_date(text: str | None) -> dt.datetime | None:
    """An HTTP `Date` header (RFC 7231, `Tue, 01 Dec 2026 12:00:00 GMT`) as an aware datetime;
    None for no header, or one without a zone or that does not parse."""
    if not text:
        return None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo is not None else None
