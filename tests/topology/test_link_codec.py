"""relay.proto.link: frame codec, validation, handshake crypto helpers."""

import json

import pytest
from hypothesis import given, strategies as st

from relay.proto.link import (
    Frame,
    LinkCodec,
    LinkProtocolError,
    auth_response,
    make_challenge,
    valid_server_id,
    valid_uid,
    verify_response,
)

SAMPLES = [
    Frame("HELLO", "001", 0, {"version": 1, "id": "001", "name": "hub.test", "caps": ["EOB"], "challenge": "ab" * 16}),
    Frame("AUTH", "001", 0, {"response": "00" * 32}),
    Frame("SERVER", "001", 1, {"id": "0AB", "name": "leaf.test", "parent": "001", "hops": 1, "description": "x"}),
    Frame("UID", "001", 2, {"uid": "001AAAAAB", "nick": "alice", "ts": 1700000000, "user": "a", "host": "h",
                            "realname": "Alice"}),
    Frame("SJOIN", "001", 3, {"channel": "#c", "ts": 1, "modes": "+nt", "members": ["@001AAAAAB"]}),
    Frame("PRIVMSG", "001", 4, {"source": "001AAAAAB", "target": "#c", "text": "héllo ☃ \t"}),
    Frame("SQUIT", "002", 5, {"id": "003", "reason": "gone"}),
    Frame("NICK", "001", 3, {"uid": "001AAAAAB", "nick": "bob", "ts": 2}),
    Frame("PART", "001", 3, {"uid": "001AAAAAB", "channel": "#c", "reason": ""}),
    Frame("QUIT", "001", 3, {"uid": "001AAAAAB", "reason": "bye"}),
    Frame("NOTICE", "001", 3, {"source": "001", "target": "001AAAAAB", "text": "hi"}),
    Frame("ERROR", "001", 0, {"reason": "authentication failed"}),
    Frame("PING", "001", 0, {"token": "t"}),
    Frame("PONG", "002", 0, {"token": "t"}),
    Frame("EOB", "001", 6, {}),
    Frame("ENCAP", "001", 7, {"target": "*", "type": "CHGHOST", "payload": {"uid": "001AAAAAB"}}),
]


def raw(body) -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return len(data).to_bytes(4, "big") + data


def test_wire_format_is_length_prefixed_compact_json():
    assert LinkCodec().encode("PING", "001", 0, {"token": "x"}) == b'\x00\x00\x00\x1e["PING","001",0,{"token":"x"}]'


@pytest.mark.parametrize("frame", SAMPLES, ids=lambda f: f.type)
def test_round_trip(frame):
    codec = LinkCodec()
    assert codec.receive_data(codec.send(frame)) == [frame]


def test_unknown_type_passes_through_unvalidated():
    codec = LinkCodec()
    data = raw(["METADATA", "002", 9, {"anything": [1, {"x": None}]}])
    [frame] = codec.receive_data(data)
    assert frame == Frame("METADATA", "002", 9, {"anything": [1, {"x": None}]}, known=False)
    assert json.loads(codec.send(frame)[4:]) == json.loads(data[4:])


def test_byte_by_byte_and_batched():
    codec = LinkCodec()
    stream = b"".join(codec.send(f) for f in SAMPLES)
    got = []
    for i in range(len(stream)):
        got += codec.receive_data(stream[i:i + 1])
    assert got == SAMPLES
    assert codec.receive_data(stream + stream[:3]) == SAMPLES
    assert codec.receive_data(stream[3:]) == SAMPLES


@given(st.lists(st.tuples(st.sampled_from(["X", "PRIVMSG", "SOMETHING_NEW"]), st.integers(0, 2**63 - 1),
                          st.text(st.characters(blacklist_characters="\0\r\n"), max_size=50)), max_size=8),
       st.lists(st.integers(0, 400), max_size=10))
def test_any_split_gives_the_same_frames(specs, cuts):
    codec = LinkCodec()
    frames = [Frame(t, "0AZ", seq, {"source": "0AZ", "target": "#x", "text": text}, known=t == "PRIVMSG")
              for t, seq, text in specs]
    stream = b"".join(codec.send(f) for f in frames)
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    got = []
    for a, b in zip(bounds, bounds[1:]):
        got += codec.receive_data(stream[a:b])
    assert got == frames


def test_oversized_length_is_refused_from_the_header_alone():
    with pytest.raises(LinkProtocolError, match="frame of 101 bytes exceeds the limit of 100"):
        LinkCodec(max_frame=100).receive_data((101).to_bytes(4, "big"))


def test_encode_refuses_oversized_frame():
    with pytest.raises(LinkProtocolError, match="exceeds the limit"):
        LinkCodec(max_frame=50).encode("PRIVMSG", "001", 0, {"text": "x" * 50})


def test_lone_surrogate_is_replaced_not_fatal():
    codec = LinkCodec()
    [frame] = codec.receive_data(raw(b'["X","001",0,{"t":"a\\ud800b"}]'))
    assert codec.receive_data(codec.send(frame))[0].payload == {"t": "a?b"}


@pytest.mark.parametrize("body, reason", [
    (b"not json", "not JSON"),
    (b"", "not JSON"),
    (b'["PING","001",0,{"token":"\xff"}]', "not JSON"),
    (b'["X","001",NaN,{}]', "not JSON"),
    (b"[" * 100_000, "not JSON"),
    ({"type": "PING"}, "must be a JSON array"),
    (["PING", "001", 0], "must be a JSON array"),
    (["PING", "001", 0, {}, 1], "must be a JSON array"),
    ([1, "001", 0, {}], "frame type must be a string"),
    (["", "001", 0, {}], "frame type must be a string"),
    (["X" * 33, "001", 0, {}], "frame type must be a string"),
    (["PING", "1", 0, {}], "origin '1' is not a server id"),
    (["PING", "abc", 0, {}], "not a server id"),
    (["PING", None, 0, {}], "not a server id"),
    (["PING", "001", -1, {}], "seq must be"),
    (["PING", "001", 2**63, {}], "seq must be"),
    (["PING", "001", 1.0, {}], "seq must be"),
    (["PING", "001", True, {}], "seq must be"),
    (["PING", "001", 0, []], "payload must be an object"),
    (["PING", "001", 0, {}], "PING frame without token"),
    (["PING", "001", 0, {"token": 5}], "token must be str, not int"),
    (["SERVER", "001", 0, {"id": "002", "name": "a.b", "parent": "001", "hops": True, "description": ""}],
     "hops must be int, not bool"),
    (["SERVER", "001", 0, {"id": "002", "name": "a" * 64, "parent": "001", "hops": 1, "description": ""}],
     "name longer than 63"),
    (["SERVER", "001", 0, {"id": "02", "name": "a.b", "parent": "001", "hops": 1, "description": ""}],
     "id '02' is not a valid id"),
    (["UID", "001", 0, {"uid": "001AAAAAB", "nick": "n" * 65, "ts": 1, "user": "u", "host": "h", "realname": ""}],
     "nick longer than 64"),
    (["UID", "001", 0, {"uid": "001aaaaab", "nick": "n", "ts": 1, "user": "u", "host": "h", "realname": ""}],
     "uid '001aaaaab' is not a valid id"),
    (["PRIVMSG", "001", 0, {"source": "nobody", "target": "#c", "text": ""}], "source 'nobody' is not a valid id"),
    (["ENCAP", "001", 0, {"target": "*", "type": "X", "payload": "no"}], "payload must be dict"),
])
def test_protocol_errors(body, reason):
    with pytest.raises(LinkProtocolError, match=reason) as err:
        LinkCodec().receive_data(raw(body))
    assert err.value.reason == str(err.value)


def test_an_error_after_good_frames_still_raises():
    codec = LinkCodec()
    with pytest.raises(LinkProtocolError):
        codec.receive_data(codec.send(SAMPLES[0]) + raw(b"garbage"))


@pytest.mark.parametrize("s, ok", [("001", True), ("0AB", True), ("9ZZ", True), ("A01", False), ("01", False),
                                   ("0001", False), ("0ab", False), ("001\n", False), ("０01", False), (1, False)])
def test_valid_server_id(s, ok):
    assert valid_server_id(s) is ok


@pytest.mark.parametrize("s, ok", [("001AAAAAB", True), ("0AB123456", True), ("001AAAAA", False),
                                   ("001aaaaab", False), ("A01AAAAAB", False), ("001AAAAABC", False)])
def test_valid_uid(s, ok):
    assert valid_uid(s) is ok


def test_make_challenge_needs_enough_randomness():
    assert make_challenge(bytes(range(16))) == bytes(range(16)).hex()
    for n in (15, 65):
        with pytest.raises(ValueError):
            make_challenge(bytes(n))


def test_auth_response_is_bound_to_direction_and_both_challenges():
    ca, cb = make_challenge(b"a" * 16), make_challenge(b"b" * 16)
    # 001 answers 002's challenge cb.
    r = auth_response("s3cret-pw", cb, "001", "002", ca)
    assert len(r) == 64 and "s3cret" not in r
    assert verify_response("s3cret-pw", r, cb, "002", "001", ca)
    assert not verify_response("wrong-pw", r, cb, "002", "001", ca)
    # Not valid the other way round, nor with the challenges swapped or another challenge.
    assert not verify_response("s3cret-pw", r, ca, "001", "002", cb)
    assert not verify_response("s3cret-pw", r, ca, "002", "001", cb)
    assert not verify_response("s3cret-pw", r, make_challenge(b"c" * 16), "002", "001", ca)
    assert r != auth_response("s3cret-pw", ca, "002", "001", cb)
    assert not verify_response("s3cret-pw", "ünicode", cb, "002", "001", ca)


def test_each_frame_body_must_be_json_on_its_own():
    # Two bodies that are JSON only when read together must not pass as two frames.
    def frame(body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + body
    with pytest.raises(LinkProtocolError, match="not JSON"):
        LinkCodec().receive_data(frame(b'["EOB","001",1,{}],["EOB","001",2') + frame(b'{}]'))
    # Whitespace around a body is still JSON, and still accepted.
    got = LinkCodec().receive_data(frame(b' ["EOB","001",1,{}] ') + frame(b'["EOB","001",2,{}]'))
    assert [(f.type, f.seq) for f in got] == [("EOB", 1), ("EOB", 2)]
