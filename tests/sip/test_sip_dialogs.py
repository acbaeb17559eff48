"""Conference dialogs in-process (time passed in): a KICK ends the dialog with BYE, RFC 4028 session
timers (422 below Min-SE, BYE when no refresh came), the OPTIONS keepalive that finds a dead dialog, and
RFC 5626 flows whose death takes their bindings."""

from __future__ import annotations

from sipcore import T0, Peer, sip  # noqa: F401 - sip is a fixture

from bridges.sip.codec import RequestReceived, ResponseReceived

ALICE = ("127.0.0.1", 7001)


def requests(out, method):
    return [e.request for e in out if isinstance(e, RequestReceived) and e.request.method == method]


def responses(out):
    return [e.response for e in out if isinstance(e, ResponseReceived)]


def join(alice: Peer, room="room", extra=(), now=T0):
    req = alice.request("INVITE", f"sip:{room}@conference.localhost",
                        extra=[("Contact", f"<sip:alice@{ALICE[0]}:{ALICE[1]}>"), *extra])
    return responses(alice.transact(req, now))[-1]


def ticks(core, ep, start, end, step=0.25):
    """Run the clock from start to end; everything sent meanwhile."""
    out, now = [], start
    while now < end:
        now += step
        core.tick(now)
        out += [e for e, _ in ep.take()]
    return out


def test_a_kick_ends_the_conference_dialog_with_bye(sip):
    core, flow, ep = sip
    alice = Peer(sip, "alice", ALICE)
    assert alice.register().status == 200
    ok = join(alice)
    assert ok.status == 200
    user = core.net.find_nick("alice")
    ch = core.net.channels[core.net.fold("#room")]
    assert user in ch.members
    core.net.kick(core.config.server.name, ch, user, "out", T0 + 1)
    [bye] = requests([e for e, _ in ep.take()], "BYE")
    assert bye.call_id == ok.call_id and bye.from_.tag == ok.to.tag and bye.to.tag == ok.from_.tag
    assert bye.uri_text == f"sip:alice@{ALICE[0]}:{ALICE[1]}"
    assert not core.services["sip"].conferences.dialogs


def test_session_interval_below_min_se_gets_422(sip):
    core, flow, ep = sip
    alice = Peer(sip, "alice", ALICE)
    assert alice.register().status == 200
    r = join(alice, extra=[("Session-Expires", "30"), ("Supported", "timer")])
    assert r.status == 422 and r.headers.get("Min-SE") == "90"
    assert core.net.find_nick("alice").channels == {}


def test_a_session_not_refreshed_in_time_is_ended_with_bye(sip):
    core, flow, ep = sip
    alice = Peer(sip, "alice", ALICE)
    assert alice.register().status == 200
    ok = join(alice, extra=[("Session-Expires", "90;refresher=uac"), ("Supported", "timer")])
    assert ok.status == 200 and ok.headers.get("Session-Expires") == "90;refresher=uac"
    assert requests(ticks(core, ep, T0, T0 + 60), "BYE") == []
    refresh = alice.request("INVITE", f"sip:room@127.0.0.1:5060", extra=[("Session-Expires", "90")])
    refresh.headers.set("To", ok.headers.get("To"))
    answer = responses(alice.send(refresh, T0 + 60))[-1]       # a re-INVITE refreshes the session
    assert answer.status == 200 and answer.headers.get("Session-Expires") == "90;refresher=uac"
    assert requests(ticks(core, ep, T0 + 60, T0 + 149), "BYE") == []
    byes = requests(ticks(core, ep, T0 + 149, T0 + 151), "BYE")   # then retransmitted: no one answers
    assert byes and {b.call_id for b in byes} == {ok.call_id}
    assert core.net.find_nick("alice").channels == {}           # the member left the channel


def test_the_keepalive_finds_a_dead_dialog(sip):
    core, flow, ep = sip
    alice = Peer(sip, "alice", ALICE)
    assert alice.register(3600).status == 200
    ok = join(alice)
    out = ticks(core, ep, T0, T0 + 61)
    options = requests(out, "OPTIONS")[0]                      # in the dialog: its Call-ID and tags
    assert options.call_id == ok.call_id and options.to.tag == ok.from_.tag
    assert core.net.find_nick("alice").channels                # no answer yet: still in
    out = ticks(core, ep, T0 + 61, T0 + 61 + 33)               # no answer at all: timer F
    assert core.net.find_nick("alice").channels == {}
    assert requests(out, "BYE") == [] and not core.services["sip"].conferences.dialogs


def test_an_answered_keepalive_keeps_the_dialog_and_481_ends_it(sip):
    core, flow, ep = sip
    alice = Peer(sip, "alice", ALICE)
    assert alice.register(3600).status == 200
    join(alice)
    from bridges.sip.codec import serialise
    from bridges.sip.message import make_response
    now = T0
    for status in (200, 481):
        out = ticks(core, ep, now, now + 61)
        now += 61
        options = requests(out, "OPTIONS")[-1]
        assert len({o.top_via.branch for o in requests(out, "OPTIONS")}) == 1  # one, retransmitted
        flow.datagram_received(serialise(make_response(options, status)), ALICE, now)
        core.tick(now)
        in_room = bool(core.net.find_nick("alice").channels)
        assert in_room is (status == 200), status


def test_a_presence_subscription_that_expires_gets_a_final_notify(sip):
    core, flow, ep = sip
    bob = Peer(sip, "bob", ("127.0.0.1", 7002))
    req = bob.request("SUBSCRIBE", "sip:alice@localhost", extra=[("Event", "presence"), ("Expires", "60"),
                                                                 ("Contact", "<sip:bob@127.0.0.1:7002>")])
    out = bob.transact(req)
    assert responses(out)[-1].status == 200
    [notify] = requests(out, "NOTIFY")               # alice is an account, not online: closed
    assert b"<basic>closed</basic>" in notify.body
    assert notify.headers.get("Subscription-State") == "active;expires=60"
    from bridges.sip.codec import serialise
    from bridges.sip.message import make_response
    flow.datagram_received(serialise(make_response(notify, 200)), bob.addr, T0)
    out = ticks(core, ep, T0, T0 + 61)
    states = [n.headers.get("Subscription-State") for n in requests(out, "NOTIFY")]
    assert states and set(states) == {"terminated;reason=timeout"}
    assert not core.services["sip"].presence.subs


def test_a_watcher_that_never_answers_a_notify_loses_its_subscription(sip):
    core, flow, ep = sip
    bob = Peer(sip, "bob", ("127.0.0.1", 7002))
    req = bob.request("SUBSCRIBE", "sip:alice@localhost", extra=[("Event", "presence"), ("Expires", "3600"),
                                                                 ("Contact", "<sip:bob@127.0.0.1:7002>")])
    assert responses(bob.transact(req))[-1].status == 200
    ticks(core, ep, T0, T0 + 33)                      # timer F of the first NOTIFY
    assert not core.services["sip"].presence.subs
