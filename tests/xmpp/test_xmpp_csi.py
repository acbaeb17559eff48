"""XEP-0352 client state indication in memory: while inactive, presence (the latest per sender) and
chat states wait; a message with a body or <active/> sends them, in order, before it."""

from __future__ import annotations

import pytest
from imsupport import Client
from support_net import Wire

CSI = "urn:xmpp:csi:0"
STATES = "http://jabber.org/protocol/chatstates"


@pytest.fixture
def wire(tmp_path):
    w = Wire(tmp_path, ["a"], modules={"xmpp": {"roster_file": ""}})
    for name in ("alice", "bob", "carol"):
        w.cores["a"].register_account(name, "secret", w.now)
    return w


def _presence(c, to: str, show: str) -> None:
    c.feed(f"<presence to='{to}'><show>{show}</show></presence>")      # directed: no roster needed


def test_inactive_holds_presence_latest_per_sender_and_chat_states(wire):
    alice, bob, carol = Client(wire, "a", "alice"), Client(wire, "a", "bob"), Client(wire, "a", "carol")
    bob.feed(f"<inactive xmlns='{CSI}'/>")
    _presence(alice, "bob@localhost", "away")
    _presence(carol, "bob@localhost", "dnd")
    _presence(alice, "bob@localhost", "xa")
    alice.feed(f"<message type='chat' to='bob@localhost'><composing xmlns='{STATES}'/></message>")
    bob.feed("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    out = bob.take()
    assert b'type="result"' in out and b"<presence" not in out and b"composing" not in out   # iqs go at once
    bob.feed(f"<active xmlns='{CSI}'/>")
    got = bob.stanzas()
    shows = [el.findtext("{jabber:client}show") for el in got if el.tag.endswith("presence")]
    assert shows == ["dnd", "xa"]                        # alice's away replaced by her xa, which moved last
    assert got[-1].find(f"{{{STATES}}}composing") is not None
    _presence(carol, "bob@localhost", "chat")
    assert b"<show>chat</show>" in bob.take()            # active again: at once


def test_a_message_with_a_body_flushes_what_waits_first(wire):
    alice, bob = Client(wire, "a", "alice"), Client(wire, "a", "bob")
    bob.feed(f"<inactive xmlns='{CSI}'/>")
    _presence(alice, "bob@localhost", "away")
    alice.feed(f"<message type='chat' to='bob@localhost'><active xmlns='{STATES}'/></message>")
    assert bob.take() == b""
    alice.chat("bob@localhost", "wake up")
    out = bob.take()
    assert out.index(b"<show>away</show>") < out.index(b"<active xmlns") < out.index(b"wake up")
    _presence(alice, "bob@localhost", "dnd")
    assert bob.take() == b""                              # still inactive: held again


def test_csi_before_bind_is_refused(wire):
    c = Client(wire, "a", "alice", None)
    c.feed(f"<inactive xmlns='{CSI}'/>")
    assert b"<not-authorized" in c.take() and c.t.closing
