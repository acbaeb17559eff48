"""XEP-0280 carbons in memory: enable/disable, received and sent copies to the account's other
carbon-enabled resources, private and no-copy respected, groupchat and headline not copied."""

from __future__ import annotations

import pytest
from imsupport import Client
from support_net import Wire

CARBONS = "urn:xmpp:carbons:2"
FWD = "{urn:xmpp:forward:0}forwarded"


@pytest.fixture
def wire(tmp_path):
    w = Wire(tmp_path, ["a"], modules={"xmpp": {"roster_file": ""}})
    for name in ("alice", "bob"):
        w.cores["a"].register_account(name, "secret", w.now)
    return w


def _enable(c, on: bool = True) -> None:
    c.feed(f"<iq type='set' id='c'><{'enable' if on else 'disable'} xmlns='{CARBONS}'/></iq>")
    assert b'type="result"' in c.take()


def _copies(c, kind: str) -> list:
    return [el for el in c.stanzas() if el.find(f"{{{CARBONS}}}{kind}") is not None]


def test_received_and_sent_copies_go_to_the_other_enabled_resources(wire):
    alice = Client(wire, "a", "alice")
    phone, laptop, old = Client(wire, "a", "bob", "phone"), Client(wire, "a", "bob", "laptop"), \
        Client(wire, "a", "bob", "old")
    phone.feed("<presence><priority>5</priority></presence>")
    for c in (laptop, old):
        c.feed("<presence><priority>1</priority></presence>")
    _enable(phone), _enable(laptop)
    for c in (phone, laptop, old):
        c.take()
    alice.chat("bob@localhost", "to the bare jid")
    assert b"to the bare jid" in phone.take()
    got = _copies(laptop, "received")
    assert len(got) == 1 and got[0].get("from") == "bob@localhost" and got[0].get("to").startswith("bob@localhost/laptop")
    inner = got[0].find(f"{{{CARBONS}}}received").find(FWD)[0]
    assert inner.findtext("{jabber:client}body") == "to the bare jid" and inner.get("from") == "alice@localhost/r"
    assert old.take() == b""                                  # carbons not enabled there
    phone.chat("alice@localhost", "sent from the phone")
    assert b"sent from the phone" in alice.take()
    sent = _copies(laptop, "sent")
    assert len(sent) == 1 and sent[0].find(f"{{{CARBONS}}}sent").find(FWD)[0].get("from").startswith("bob@localhost/phone")
    assert b"sent from the phone" not in phone.take()         # not to the sender itself
    _enable(laptop, False)
    alice.chat("bob@localhost", "again")
    assert b"again" not in laptop.take()


def test_private_no_copy_groupchat_and_headline_are_not_copied(wire):
    alice = Client(wire, "a", "alice")
    phone, laptop = Client(wire, "a", "bob", "phone"), Client(wire, "a", "bob", "laptop")
    phone.feed("<presence><priority>5</priority></presence>")
    laptop.feed("<presence/>")
    _enable(phone), _enable(laptop)
    phone.take(), laptop.take()
    alice.feed(f"<message type='chat' to='bob@localhost'><body>secret</body><private xmlns='{CARBONS}'/></message>")
    out = phone.take()
    assert b"secret" in out and b"private" not in out          # the hint is removed from what is delivered
    alice.feed("<message type='chat' to='bob@localhost'><body>nc</body><no-copy xmlns='urn:xmpp:hints'/></message>")
    alice.feed("<message type='headline' to='bob@localhost'><body>news</body></message>")
    alice.feed(f"<message type='chat' to='bob@localhost/phone'><body>to the full jid</body></message>")
    phone.feed(f"<message type='chat' to='alice@localhost'><body>mine</body><private xmlns='{CARBONS}'/></message>")
    out = laptop.take()
    assert b"secret" not in out and b"nc" not in out and b"news" not in out and b"mine" not in out
    assert b"to the full jid" in out and b"received" in out   # a chat to another full JID is copied
