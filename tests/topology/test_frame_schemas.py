"""Every link frame type has a schema: a frame that breaks it is refused with a LinkProtocolError naming
its type and key, the link is dropped with that reason, and the server keeps running. No payload a peer
can send makes a handler raise."""

import typing

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from support_net import Wire

import relay.core.link_frames as link_frames
from relay.proto.link import FRAME_SCHEMAS, Checked, LinkCodec, LinkProtocolError, Opt

BOB_ID = "002000001"   # the first user of b.test (bob, in #c with alice of a.test)
NEW_ID = "002ZZZZZZ"


def valid_payloads(alice: str) -> dict[str, dict]:
    """One well-formed payload per frame type, as b.test's senders make them."""
    msg = {"source": BOB_ID, "target": "#c", "text": "hi", "tags": {"+draft/x": "1"}, "msgid": "002-9",
           "time": 1_000_001.5}
    return {
        "ERROR": {"reason": "going"},
        "PING": {"token": "1.5"},
        "PONG": {"token": "1000000.0"},
        "VECTOR": {"seen": {"001": 0}},
        "EOB": {},
        "SERVER": {"id": "0AB", "name": "leaf.test", "parent": "002", "hops": 2, "description": "x", "seq": 0},
        "SQUIT": {"id": "0AB", "reason": "gone"},
        "UID": {"uid": NEW_ID, "nick": "zed", "ts": 1_000_000, "user": "z", "host": "h", "realname": "Zed",
                "server": "002", "account": None, "away": "out", "modes": "i", "proto": "irc", "ip": "10.0.0.1",
                "signon": 1_000_000, "attrs": {"irc": {}}},
        "NICK": {"uid": BOB_ID, "nick": "bobby", "ts": 1_000_001},
        "QUIT": {"uid": BOB_ID, "reason": "bye"},
        "KILL": {"uid": BOB_ID, "reason": "killed"},
        "UPDATE": {"uid": BOB_ID, "what": "away", "value": "lunch"},
        "SJOIN": {"channel": "#c", "ts": 1_000_000, "modes": "+nt", "members": [[BOB_ID, "v"]], "key": None,
                  "limit": None, "lists": {"b": [["*!*@x", "bob", 1_000_000]]}, "topic": ["t", "bob", 1_000_000]},
        "PART": {"uid": BOB_ID, "channel": "#c", "reason": ""},
        "KICK": {"source": BOB_ID, "channel": "#c", "uid": alice, "reason": "out"},
        "MODE": {"source": "b.test", "channel": "#c", "ts": 1_000_000, "changes": [["+", "v", alice], ["-", "t", None]]},
        "TOPIC": {"source": BOB_ID, "channel": "#c", "topic": "new", "setter": "bob", "ts": 1_000_001},
        "INVITE": {"source": BOB_ID, "uid": alice, "channel": "#c"},
        "PRIVMSG": msg,
        "NOTICE": dict(msg),
        "TAGMSG": dict(msg, text=""),
        "ENCAP": {"target": "*", "type": "X-TEST", "payload": {"a": 1}},
    }


# Per type: (key, value, the error it must give): a value of the right JSON type that is still refused.
HOSTILE = {
    "ERROR": ("reason", "r" * 401, "ERROR frame: reason longer than 400"),
    "PING": ("token", "t" * 65, "PING frame: token longer than 64"),
    "PONG": ("token", "t" * 65, "PONG frame: token longer than 64"),
    "VECTOR": ("seen", {"001": -1}, "VECTOR: seen must map server ids to sequence numbers"),
    "EOB": ("server", "zz", "EOB frame: server 'zz' is not a valid id"),
    "SERVER": ("hops", -1, "SERVER frame: hops -1 is out of range"),
    "SQUIT": ("id", "1", "SQUIT frame: id '1' is not a valid id"),
    "UID": ("attrs", {"irc": 1}, "UID frame: attrs['irc'] must be dict, not int"),
    "NICK": ("ts", 2**62, "NICK frame: ts 4611686018427387904 is out of range"),
    "QUIT": ("uid", "bob", "QUIT frame: uid 'bob' is not a valid id"),
    "KILL": ("uid", "002abcdef", "KILL frame: uid '002abcdef' is not a valid id"),
    "UPDATE": ("value", {"m": 1}, "UPDATE frame: value (for away) must be str or null, not dict"),
    "SJOIN": ("members", [[BOB_ID, 5]], "SJOIN frame: members[0][1] must be str, not int"),
    "PART": ("channel", "#" * 201, "PART frame: channel longer than 200"),
    "KICK": ("source", "no such", "KICK frame: source 'no such' is not a user id or server name"),
    "MODE": ("changes", [["*", "o", None]], "MODE frame: changes[0][0] '*' must be + or -"),
    "TOPIC": ("topic", "t" * 1001, "TOPIC frame: topic longer than 1000"),
    "INVITE": ("source", "nobody", "INVITE frame: source 'nobody' is not a valid id"),
    "PRIVMSG": ("time", 1e300, "PRIVMSG frame: time 1e+300 is out of range"),
    "NOTICE": ("tags", {"a": 1}, "NOTICE frame: tags['a'] must be str or null, not int"),
    "TAGMSG": ("msgid", "m" * 129, "TAGMSG frame: msgid longer than 128"),
    "ENCAP": ("type", "T" * 33, "ENCAP frame: type longer than 32"),
}
LINK_TYPES = sorted(HOSTILE)
# More values that would break what clients are sent (a line break, a space inside a name).
MORE_HOSTILE = [
    ("PRIVMSG", "text", "a\r\nQUIT :x", "PRIVMSG frame: text 'a\\r\\nQUIT :x' is not one line"),
    ("NICK", "nick", "", "NICK frame: nick '' is not a name"),
    ("NICK", "nick", "a b", "NICK frame: nick 'a b' is not a name"),
    ("MODE", "changes", [["+", "k", "a b"]], "MODE frame: changes[0][2] 'a b' is not a name"),
    ("NOTICE", "tags", {"a=b": "1"}, "NOTICE frame: tags key 'a=b' is not a tag name"),
    ("UID", "host", "a b", "UID frame: host 'a b' is not a host"),
    ("SJOIN", "lists", {"b": [["a b", "x", 1]]}, "SJOIN frame: lists['b'][0][0] 'a b' is not a mask"),
    ("SJOIN", "topic", ["t", "s", -5], "SJOIN frame: topic[2] '-5' is not a time"),
    ("UPDATE", "value", "x\n", "UPDATE frame: value (for away)"),
]


def _net(tmp_path):
    w = Wire(tmp_path, ["a", "b"])
    w.link("a", "b")
    alice, bob = w.client("a", "alice"), w.client("b", "bob")
    alice.send("JOIN #c")
    bob.send("JOIN #c")
    assert bob.user.uid == BOB_ID
    return w, alice


def _inject(w, ftype: str, payload: dict, seq: int = 50) -> None:
    """b.test's link sends `ftype` to a.test."""
    s = w.cores["a"].links.peers["002"]
    s.data_received(LinkCodec().encode(ftype, "002", seq, payload), w.now)
    w.pump()


def _refused_with(w, reason: str) -> None:
    a = w.cores["a"]
    assert "002" not in a.links.peers, "the link should have been dropped"
    assert a.links.last_error["b.test"] == f"protocol error: {reason}" or reason in a.links.last_error["b.test"]
    assert a.links.last_error["b.test"].startswith("protocol error: ")
    w.link("a", "b")                                       # a kept running and links again
    assert "002" in a.links.peers and len(w.digests()) == 1


@pytest.fixture
def no_handler_raises(monkeypatch):
    def raise_it(*args, **kw):
        raise AssertionError("a link frame handler raised")
    monkeypatch.setattr(link_frames.log, "exception", raise_it)


def test_every_frame_type_in_the_handler_table_has_a_schema():
    assert set(link_frames.FRAMES) <= set(FRAME_SCHEMAS)
    assert set(link_frames.FRAMES) == set(LINK_TYPES)


@pytest.mark.parametrize("ftype", LINK_TYPES)
def test_a_valid_frame_passes(tmp_path, ftype, no_handler_raises):
    w, alice = _net(tmp_path)
    _inject(w, ftype, valid_payloads(alice.user.uid)[ftype])
    a = w.cores["a"]
    if ftype == "ERROR":
        assert a.links.last_error["b.test"] == "closed by peer: going"
        return
    assert "002" in a.links.peers, a.links.last_error
    if ftype == "UID":
        assert a.net.users[NEW_ID].nick == "zed" and a.net.users[NEW_ID].away == "out"
    if ftype == "TOPIC":
        assert a.net.find_channel("#c").topic == "new"


def _required(ftype):
    return [(ftype, k, spec) for k, spec in FRAME_SCHEMAS[ftype].items() if not isinstance(spec, Opt)]


@pytest.mark.parametrize("ftype, key, spec", [c for t in LINK_TYPES for c in _required(t)],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_a_missing_key_is_refused_by_name(tmp_path, ftype, key, spec, no_handler_raises):
    w, alice = _net(tmp_path)
    p = dict(valid_payloads(alice.user.uid)[ftype])
    del p[key]
    _inject(w, ftype, p)
    _refused_with(w, f"{ftype} frame without {key}")


@pytest.mark.parametrize("ftype, key, spec", [c for t in LINK_TYPES for c in _required(t)],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_a_wrong_type_is_refused_by_name(tmp_path, ftype, key, spec, no_handler_raises):
    w, alice = _net(tmp_path)
    p = dict(valid_payloads(alice.user.uid)[ftype])
    p[key] = _wrong(spec)
    _inject(w, ftype, p)
    _refused_with(w, f"{ftype} frame: {key}")
    assert "must be" in w.cores["a"].links.last_error["b.test"]


def _wrong(spec):
    """A value of a JSON type that `spec` does not allow."""
    if isinstance(spec, Checked):
        return _wrong(spec.spec)
    allowed = typing.get_args(spec) or (spec,)
    if not all(isinstance(t, type) or t is None for t in allowed):
        return 12345  # a list, tuple or map spec
    return next(v for v in (12345, "1", [], {}) if type(v) not in allowed)


@pytest.mark.parametrize("ftype", LINK_TYPES)
def test_a_hostile_value_is_refused_by_name(tmp_path, ftype, no_handler_raises):
    w, alice = _net(tmp_path)
    key, value, reason = HOSTILE[ftype]
    p = dict(valid_payloads(alice.user.uid)[ftype], **{key: value})
    _inject(w, ftype, p)
    _refused_with(w, reason)


@pytest.mark.parametrize("ftype, key, value, reason", MORE_HOSTILE, ids=lambda v: v if isinstance(v, str) else "")
def test_a_value_that_would_break_a_client_line_is_refused(tmp_path, ftype, key, value, reason, no_handler_raises):
    w, alice = _net(tmp_path)
    _inject(w, ftype, dict(valid_payloads(alice.user.uid)[ftype], **{key: value}))
    _refused_with(w, reason)


@pytest.mark.parametrize("ftype", ["HELLO", "AUTH"])
def test_handshake_frames_after_authentication_are_refused(tmp_path, ftype):
    w, _ = _net(tmp_path)
    p = {"HELLO": {"version": 1, "id": "002", "name": "b.test", "caps": [], "challenge": "ab" * 16},
         "AUTH": {"response": "00" * 32}}[ftype]
    _inject(w, ftype, p, seq=0)
    _refused_with(w, f"{ftype} frame after authentication")


# ------------------------------------------------------------------ random payloads

def test_the_random_payload_test_sees_a_handler_that_raises(tmp_path, monkeypatch, no_handler_raises):
    w, _ = _net(tmp_path)
    def broken(lk, s, f, now):
        raise KeyError("key")
    monkeypatch.setitem(link_frames.FRAMES, "PING", link_frames.FrameRule(broken, None))
    [frame] = LinkCodec().receive_data(LinkCodec().encode("PING", "002", 0, {"token": "x"}))
    with pytest.raises(AssertionError, match="handler raised"):
        link_frames.dispatch(w.cores["a"].links, StubSession(), frame, w.now)


class StubSession:
    """b.test's link as the dispatcher sees it, without closing anything: so every example runs."""
    peer_id, peer_name, caps, role = "002", "b.test", frozenset(), "accept"

    def __init__(self):
        self.closed = self.burst_done = False
        self.refused: list[str] = []

    def write_frame(self, ftype, data):
        pass

    def refuse(self, e, now):
        self.refused.append(e.reason)

    def drop(self, reason, now):
        self.refused.append(reason)

    def close(self, reason, now):
        pass

    def pong(self, token, now):
        pass


_json = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
                     | st.text(max_size=12),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
                     max_leaves=6)
_SAMPLES = {
    "uid": [BOB_ID, NEW_ID, "001000001", "002000009"], "source": [BOB_ID, "001000001", "b.test", "002"],
    "channel": ["#c", "#d", "c"], "target": ["#c", "#d", BOB_ID, "001000001", "*", "001", "002,0AB"],
    "id": ["002", "0AB", "001", "003"], "parent": ["001", "002", "0AB"], "server": ["002", "0AB", "001"],
    "what": ["away", "account", "realname", "modes", "attrs", "host"],
    "changes": [[["+", "o", BOB_ID]], [["+", "k", None]], [["+", "l", "x"]], [["-", "b", "*!*@*"]],
                [["+", "l", "5"], ["+", "z", None]]],
    "members": [[[BOB_ID, "o"]], [["001000001", ""], [NEW_ID, "ov"]], []],
    "modes": ["+nt", "+k", "i", "+lz", ""],
    "seen": [{"001": 0}, {"002": 2**63 - 1}],
}


def _value(key, spec):
    base = _SAMPLES.get(key)
    valid = st.sampled_from(base) if base else st.nothing()
    return st.one_of(valid, _json, st.integers(0, 2**37), st.text(max_size=8))


@st.composite
def _payload(draw, ftype):
    p = {}
    for key, spec in FRAME_SCHEMAS[ftype].items():
        if draw(st.integers(0, 9)) == 0:
            continue  # sometimes missing
        p[key] = draw(_value(key, spec))
    return p


@pytest.mark.parametrize("ftype", LINK_TYPES)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_payload_makes_a_handler_raise(tmp_path_factory, ftype, data, no_handler_raises):
    key = ("net", ftype)
    if key not in _NETS:
        _NETS[key] = _net(tmp_path_factory.mktemp(ftype))[0]
    w = _NETS[key]
    payload = data.draw(_payload(ftype))
    try:
        [frame] = LinkCodec().receive_data(LinkCodec().encode(ftype, "002", data.draw(st.integers(0, 99)), payload))
    except LinkProtocolError:
        return  # refused by the codec, with its reason
    link_frames.dispatch(w.cores["a"].links, StubSession(), frame, w.now)
    w.queue.clear()


_NETS: dict = {}


# The message frames' one-pass check (relay.proto.link._plain_message) must never accept what the
# full schema refuses: payloads near the schema, with every kind of fault it knows.
_near_text = st.one_of(st.text(max_size=8), st.sampled_from(["", ":x", "a b", "a\r", "a\0", "x" * 201, "k=v", "a;b"]))
_near_value = st.one_of(_near_text, st.none(), st.integers(-5, 2**38), st.floats(allow_nan=True), st.booleans(),
                        st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.none(), max_size=2))
_near_message = st.fixed_dictionaries(
    {"source": st.one_of(st.sampled_from([BOB_ID, "002", "02", "002abcdef", "002ZZZZZZZ", ""]), _near_value),
     "target": st.one_of(st.sampled_from(["#c", "x" * 200, "x" * 201]), _near_value),
     "text": st.one_of(st.sampled_from(["hi", "a\r\nb"]), _near_value)},
    optional={"tags": st.one_of(st.dictionaries(_near_text, st.one_of(_near_text, st.none()), max_size=3),
                                st.dictionaries(st.text(max_size=2), st.none(), min_size=101, max_size=102),
                                _near_value),
              "msgid": st.one_of(st.sampled_from(["002-9", "m" * 128, "m" * 129]), _near_value),
              "time": st.one_of(st.sampled_from([0, 1.5, -1, 2**37, 2**37 + 1, True]), _near_value)})


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow])
@given(ftype=st.sampled_from(["PRIVMSG", "NOTICE", "TAGMSG"]), payload=_near_message)
def test_the_fast_message_check_accepts_only_what_the_schema_accepts(ftype, payload):
    from relay.proto.link import _RULES, _check_payload, _plain_message
    if _plain_message(payload):
        _check_payload(ftype, payload, _RULES[ftype])     # must not raise


def test_the_fast_message_check_takes_the_common_frames():
    from relay.proto.link import _plain_message
    assert _plain_message({"source": BOB_ID, "target": "#c", "text": "hi", "tags": {"+draft/x": "1", "label": None},
                           "msgid": "002-9", "time": 1_000_001.5})
    assert _plain_message({"source": "002", "target": "#c", "text": "hi"})
