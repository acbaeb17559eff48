"""XEP-0082 date-times (history `since`, MAM `start`/`end`)."""

from __future__ import annotations

import datetime as _dt


def parse_stamp(text: str) -> float | None:
    """`2026-12-01T12:00:00Z` (fractions and offsets allowed) as a UNIX time; None if it is not one."""
    try:
        t = _dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.timestamp()
