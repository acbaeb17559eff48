"""Large rooms in memory: 10,000 occupants join one room (and leave it again) in time and bytes
linear in their number, with presence broadcast limited by `max_users_presence`; the members stay
members. And a groupchat message to many occupants is serialised once (only `to` varies)."""

from __future__ import annotations

import pytest
from lxml import etree

from bridges.xmpp import stanza as stanza_mod
from bridges.xmpp.jid import parse_jid
from support_net import Wire

ROOM = "big@conference.localhost"


class Sink:
    """A transport that counts what it is given."""

    def __init__(self):
        self.peer_host, self.tls, self.closing, self.bytes = "127.0.0.1", True, False, 0
        self.stanzas = 0

    def write(self, data: bytes) -> None:
        self.bytes += len(data)
        self.stanzas += 1


class BoundSession:
    """A bound c2s resource without the negotiation (10,000 logins would only measure PBKDF2)."""

    def __init__(self, svc, account: str):
        self.svc, self.account = svc, account
        self.jid = parse_jid(f"{account}@localhost/r")
        self.t = Sink()
        self.member = None
        self.presence, self.priority, self.interested, self.roster_requested = None, 0, False, False

    established = True

    def send(self, el) -> None:
        self.t.write(stanza_mod.serialise(el))

    def send_bytes_of(self, out) -> None:
        self.t.write(out.bytes_to(str(self.jid)))

    def feed(self, text: str, now: float) -> None:
        el = etree.fromstring(f"<x xmlns='jabber:client'>{text}</x>")[0]
        self.svc.router.from_client(self, el, now)


def occupants(tmp_path, n: int, max_users_presence: int):
    w = Wire(tmp_path, ["a"], modules={"xmpp": {"roster_file": ""},
                                       "muc": {"max_users_presence": max_users_presence, "archive": False}})
    svc = w.cores["a"].services["xmpp"]
    sessions = []
    for i in range(n):
        s = BoundSession(svc, f"u{i}")
        svc.bound(s, w.now)
        sessions.append(s)
    return w, svc, sessions


def join_all(w, sessions) -> None:
    for s in sessions:
        s.feed(f"<presence to='{ROOM}/{s.account}'/>", w.now)


def test_ten_thousand_occupants_join_in_linear_bytes(tmp_path):
    w, svc, sessions = occupants(tmp_path, 10_000, max_users_presence=100)
    join_all(w, sessions)
    ch = w.cores["a"].net.find_channel("#big")
    assert len(ch.members) == 10_000                   # membership is whole, whatever presence says
    total = sum(s.t.bytes for s in sessions)
    first = sessions[0].t.stanzas
    # u0 (the creator, @) saw the first 100 joins, then only moderators': no quadratic stanzas or bytes
    assert first < 150, first
    assert total < 10_000 * 2_000, total
    # a late joiner's occupant list is the moderators and itself, not 10,000 presences
    late = BoundSession(svc, "late")
    svc.bound(late, w.now)
    late.feed(f"<presence to='{ROOM}/late'/>", w.now)
    assert late.t.stanzas < 10
    # a message still reaches every occupant
    before = [s.t.stanzas for s in sessions]
    late.feed(f"<message type='groupchat' to='{ROOM}'><body>hello all</body></message>", w.now)
    assert all(s.t.stanzas == b + 1 for s, b in zip(sessions, before))
    # and they all leave
    for s in sessions:
        s.feed(f"<presence type='unavailable' to='{ROOM}/{s.account}'/>", w.now)
    assert list(ch.members) == [w.cores["a"].net.find_nick("late")]


def test_join_cost_does_not_grow_with_the_room(tmp_path):
    """The core tells the MUC each join once (events_via), not once per occupant: the calls the 2,000th
    join makes are as many as the 200th's."""
    w, svc, sessions = occupants(tmp_path, 2_000, max_users_presence=50)
    muc = w.cores["a"].services["muc"]
    calls = []
    real = muc.channel_event
    muc.channel_event = lambda *a: calls.append(1) or real(*a)
    join_all(w, sessions[:200])
    n200 = len(calls)
    join_all(w, sessions[200:400])
    d1 = len(calls) - n200
    join_all(w, sessions[400:1800])
    mark = len(calls)
    join_all(w, sessions[1800:])
    assert len(calls) - mark == d1 == 200


@pytest.mark.parametrize("n", [10, 100])
def test_a_groupchat_message_is_serialised_once_for_every_occupant(tmp_path, monkeypatch, n):
    w, svc, sessions = occupants(tmp_path, n, max_users_presence=1000)
    join_all(w, sessions)
    for s in sessions:
        s.t.bytes = s.t.stanzas = 0
    made = []
    real = stanza_mod.serialise
    monkeypatch.setattr(stanza_mod, "serialise", lambda *a, **k: made.append(1) or real(*a, **k))
    sessions[0].feed(f"<message type='groupchat' to='{ROOM}' id='x'><body>once</body></message>", w.now)
    assert all(s.t.stanzas == 1 for s in sessions)
    assert len(made) == 2            # once for the n-1 others (only `to` varies), once for the reflection
