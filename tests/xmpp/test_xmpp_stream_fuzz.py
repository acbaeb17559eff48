"""Fuzzing and memory: the codec only ever answers with its own events, and does not grow with a stream."""

from __future__ import annotations

import gc
import tracemalloc

import psutil
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_xmpp_stream import STANZAS, TRANSCRIPT
from xmppcodec_support import comparable, feed_chunks, header, server_stream

from bridges.xmpp.stream import StanzaReceived, StreamErrorOccurred

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PIECES = [b"<", b">", b"/", b"<!", b"<?", b"&", b";", b"&amp;", b"&#x41;", b"<![CDATA[", b"]]>", b"'", b'"',
          b"=", b" ", b"xmlns='jabber:client'", b"<message>", b"</message>", b"<stream:error>", b"</stream:stream>",
          b"\xff", b"\xc3", b"\xa9", b"\x00", b"<?xml version='1.0'?>", b"<!DOCTYPE", b"<!--", b"-->", b"\n"]


def _chunks(data: bytes, cuts: list) -> list:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def _run(chunks) -> list:
    stream = server_stream()
    events = feed_chunks(stream, chunks)
    errors = [e for e in events if isinstance(e, StreamErrorOccurred)]
    assert len(errors) <= 1 and (not errors or events[-1] is errors[0])
    return events


@SETTINGS
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0), max_size=6))
def test_random_bytes_after_a_header(data, cuts):
    _run(_chunks(header() + data, cuts))


@SETTINGS
@given(st.lists(st.sampled_from(PIECES) | st.binary(max_size=8), max_size=40), st.lists(st.integers(0), max_size=6))
def test_random_markup_soup(pieces, cuts):
    _run(_chunks(header() + b"".join(pieces), cuts))


@SETTINGS
@given(st.integers(0, len(TRANSCRIPT) - 1), st.binary(min_size=1, max_size=6), st.lists(st.integers(0), max_size=5))
def test_mutated_transcript(at, junk, cuts):
    data = TRANSCRIPT[:at] + junk + TRANSCRIPT[at + len(junk):]
    _run(_chunks(data, cuts))


@SETTINGS
@given(st.lists(st.integers(0), max_size=8))
def test_valid_transcript_any_cuts(cuts):
    assert comparable(_run(_chunks(TRANSCRIPT, cuts))) == comparable(_run([TRANSCRIPT]))


@SETTINGS
@given(st.binary(max_size=300))
def test_websocket_random_messages(data):
    stream = server_stream(framing="websocket")
    stream.receive_data(b'<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="localhost" version="1.0"/>')
    stream.receive_data(data)


def test_memory_does_not_grow_with_the_stream():
    stream = server_stream()
    stream.receive_data(header())
    batch = b"".join(STANZAS[:3]) * 100             # 300 stanzas a read, about 60 KB
    process = psutil.Process()

    def run(reads: int) -> int:
        count = 0
        for _ in range(reads):
            for ev in stream.receive_data(batch):
                assert isinstance(ev, StanzaReceived)
                count += 1
        return count

    run(30)                                          # warm up lxml's and the allocator's pools
    gc.collect()
    rss_before = process.memory_info().rss
    tracemalloc.start()
    snapshot_before = tracemalloc.take_snapshot()
    assert run(334) >= 100_000
    gc.collect()
    grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(snapshot_before, "filename"))
    tracemalloc.stop()
    rss_grown = process.memory_info().rss - rss_before
    assert grown < 256 * 1024, grown                  # Python objects: nothing kept per stanza
    assert rss_grown < 4 * 1024 * 1024, rss_grown     # libxml2's nodes (not traced): freed as well
    assert len(stream._root) == 0 and stream._root.text is None


@SETTINGS
@given(st.lists(st.integers(0), max_size=10), st.lists(st.booleans(), min_size=12, max_size=12))
def test_hibernating_between_any_chunks_changes_nothing(cuts, sleeps):
    chunks = _chunks(TRANSCRIPT, cuts)
    stream = server_stream()
    events = []
    for chunk, sleep in zip(chunks, sleeps + [False] * len(chunks)):
        events.extend(stream.receive_data(chunk))
        if sleep:
            stream.hibernate()
    assert comparable(events) == comparable(_run([TRANSCRIPT]))
