"""Helpers for the SIP codec tests: the RFC 4475 messages and a summary of codec events."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bridges.sip.codec import (
    KeepalivePing, KeepalivePong, MessageRejected, RequestReceived, ResponseReceived, SipStreamConnection,
)

REPO = Path(__file__).resolve().parents[2]
# CI lays shared/ beside the clone; a worktree lives one level further down (<root>/wt/<branch>).
_CANDIDATES = [REPO.parent / "shared" / "data" / "rfc4475", REPO.parent.parent / "shared" / "data" / "rfc4475"]
if os.environ.get("RELAYNET_RFC4475"):
    _CANDIDATES.insert(0, Path(os.environ["RELAYNET_RFC4475"]))
RFC4475_DIR = next((p for p in _CANDIDATES if p.is_dir()), None)


def rfc4475_names() -> list[str]:
    return sorted(p.stem for p in RFC4475_DIR.glob("*.dat")) if RFC4475_DIR else []


def load_rfc4475(name: str) -> bytes:
    """A message as the RFC means it: bare LF made CRLF unless the file already has CRLF (SOURCE.md)."""
    if RFC4475_DIR is None:
        pytest.skip(f"RFC 4475 messages not found (looked in {', '.join(map(str, _CANDIDATES))})")
    data = (RFC4475_DIR / f"{name}.dat").read_bytes()
    return data if b"\r\n" in data else data.replace(b"\n", b"\r\n")


def summary(event) -> tuple:
    """What an event says, comparable across runs."""
    if isinstance(event, RequestReceived):
        r = event.request
        return ("request", r.method, r.uri_text, list(r.headers), r.body)
    if isinstance(event, ResponseReceived):
        r = event.response
        return ("response", r.status, r.reason, list(r.headers), r.body)
    if isinstance(event, MessageRejected):
        resp = event.response
        return ("rejected", event.reason, resp and (resp.status, resp.reason, list(resp.headers)),
                event.framing_lost)
    assert isinstance(event, (KeepalivePing, KeepalivePong)), event
    return (type(event).__name__,)


def stream_events(chunks, eof: bool = True) -> list:
    conn = SipStreamConnection()
    events = []
    for chunk in chunks:
        events += conn.receive_data(chunk)
    if eof:
        events += conn.receive_eof()
    return events
