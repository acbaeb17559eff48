"""Presence (RFC 3856) on a real server: a SIP watcher subscribes to an IRC user's presence and gets a
NOTIFY with PIDF for online, away (IRC AWAY), offline, and a final one when it unsubscribes."""

from __future__ import annotations

import pytest
from sipua import UA
from support import RawClient, Server, free_port, server_config

from bridges.sip.digest import parse_challenge  # noqa: F401


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    irc, sip = free_port(), free_port()
    cfg = server_config(listen=[{"proto": "irc", "host": "127.0.0.1", "port": irc},
                                {"proto": "sip", "host": "127.0.0.1", "port": sip, "transport": "udp"},
                                {"proto": "sip", "host": "127.0.0.1", "port": sip}],
                        modules={"sip": {}}, sip={"min_expires": 30})
    s = Server(tmp_path_factory.mktemp("sippres"), cfg).start()
    s.sip_port = sip
    s.ctl("register", "watcher", "watcher-pw")
    yield s
    s.stop()
    assert "Traceback" not in s.log(), s.log()[-3000:]


def basic(notify) -> str:
    body = notify.body.decode()
    return body.split("<basic>", 1)[1].split("</basic>", 1)[0]


def test_subscribe_to_an_irc_users_presence(srv):
    w = UA(srv.sip_port, "watcher", "watcher-pw")
    irc = RawClient(srv.irc_port).register("ircpal")
    sub = w.request("SUBSCRIBE", "sip:ircpal@localhost", extra=[("Event", "presence"), ("Expires", "600"),
                                                                ("Contact", f"<{w.contact}>")])
    r = w.transact(sub)
    assert r.status == 200 and r.headers.get("Expires") == "600"
    n = w.wait_request("NOTIFY")
    assert n.headers.get("Event") == "presence" and n.headers.get("Subscription-State").startswith("active")
    assert n.content_type == "application/pidf+xml" and basic(n) == "open"
    assert 'entity="sip:ircpal@localhost"' in n.body.decode()
    irc.send("AWAY :out for lunch")
    irc.read_until(" 306 ")
    n = w.wait_request("NOTIFY")
    assert basic(n) == "open" and "<rpid:away/>" in n.body.decode() and "out for lunch" in n.body.decode()
    irc.send("AWAY")
    irc.read_until(" 305 ")
    n = w.wait_request("NOTIFY")
    assert basic(n) == "open" and "rpid:away" not in n.body.decode()
    irc.send("QUIT :bye")
    irc.closed()
    n = w.wait_request("NOTIFY")
    assert basic(n) == "closed"
    irc2 = RawClient(srv.irc_port).register("ircpal")       # back: open again
    assert basic(w.wait_request("NOTIFY")) == "open"
    unsub = w.request("SUBSCRIBE", str(r.contacts[0].uri), extra=[("Event", "presence"), ("Expires", "0")])
    unsub.headers.set("To", r.headers.get("To"))
    assert w.transact(unsub, auth=False).status == 200
    n = w.wait_request("NOTIFY")
    assert n.headers.get("Subscription-State").startswith("terminated")
    irc2.close()
    w.close()


def test_subscribe_needs_authentication_and_the_presence_event(srv):
    w = UA(srv.sip_port, "watcher", "watcher-pw")
    RawClient(srv.irc_port).register("somebody")
    sub = w.request("SUBSCRIBE", "sip:somebody@localhost", extra=[("Event", "presence"),
                                                                  ("Contact", f"<{w.contact}>")])
    w.send(sub)
    assert w.next_message().status == 407
    bad = w.request("SUBSCRIBE", "sip:somebody@localhost", extra=[("Event", "dialog"),
                                                                  ("Contact", f"<{w.contact}>")])
    r = w.transact(bad)
    assert r.status == 489 and r.headers.get("Allow-Events") == "presence"
    missing = w.request("SUBSCRIBE", "sip:nobody-at-all@localhost", extra=[("Event", "presence"),
                                                                           ("Contact", f"<{w.contact}>")])
    assert w.transact(missing).status == 404
    w.close()


def subscribe(w: UA, nick: str, auth: bool = True):
    sub = w.request("SUBSCRIBE", f"sip:{nick}@localhost", extra=[("Event", "presence"), ("Expires", "600"),
                                                                 ("Contact", f"<{w.contact}>")])
    return w.transact(sub, auth=auth)


def test_presence_follows_a_nick_change(srv):
    srv.ctl("register", "renamed", "renamed-pw")       # an account: its presence may be watched offline
    irc = RawClient(srv.irc_port).register("oldname")
    old_w = UA(srv.sip_port, "watcher", "watcher-pw")
    new_w = UA(srv.sip_port, "watcher", "watcher-pw")
    assert subscribe(old_w, "oldname").status == 200
    assert basic(old_w.wait_request("NOTIFY")) == "open"
    assert subscribe(new_w, "renamed").status == 200
    assert basic(new_w.wait_request("NOTIFY")) == "closed"
    irc.send("NICK renamed")
    irc.read_until("NICK")
    n = old_w.wait_request("NOTIFY")
    assert n.headers.get("Subscription-State") == "terminated;reason=noresource"
    assert basic(n) == "closed" and "now known as renamed" in n.body.decode()
    n = new_w.wait_request("NOTIFY")
    assert n.headers.get("Subscription-State").startswith("active") and basic(n) == "open"
    irc.close()
    old_w.close()
    new_w.close()


@pytest.fixture
def ruled(tmp_path, request):
    irc, sip = free_port(), free_port()
    cfg = server_config(listen=[{"proto": "irc", "host": "127.0.0.1", "port": irc},
                                {"proto": "sip", "host": "127.0.0.1", "port": sip, "transport": "udp"},
                                {"proto": "sip", "host": "127.0.0.1", "port": sip}],
                        modules={"sip": {}}, sip={"min_expires": 30, "presence": request.param})
    s = Server(tmp_path / "rules", cfg).start()
    s.sip_port = sip
    s.ctl("register", "watcher", "watcher-pw")
    yield s
    s.stop()
    assert "Traceback" not in s.log(), s.log()[-3000:]


@pytest.mark.parametrize("ruled", ["open"], indirect=True)
def test_presence_open_lets_anyone_watch_unchallenged(ruled):
    irc = RawClient(ruled.irc_port).register("public")
    w = UA(ruled.sip_port, "stranger", None)
    r = subscribe(w, "public", auth=False)
    assert r.status == 200 and basic(w.wait_request("NOTIFY")) == "open"
    w.close()
    irc.close()


@pytest.mark.parametrize("ruled", ["channels"], indirect=True)
def test_presence_channels_needs_a_shared_channel(ruled):
    pal = RawClient(ruled.irc_port).register("pal")
    pal.send("JOIN #club")
    pal.read_until(" 366 ")
    w = UA(ruled.sip_port, "watcher", "watcher-pw", transport="TCP")
    assert w.register(600).status == 200
    r = subscribe(w, "pal")
    assert r.status == 403 and "watch" in r.reason               # authenticated, but no channel in common
    assert subscribe(w, "watcher").status == 200              # one's own presence
    w.wait_request("NOTIFY")
    offer = b"v=0\r\no=w 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    invite = w.request("INVITE", "sip:club@conference.localhost", extra=[("Contact", f"<{w.contact}>")], body=offer)
    invite.headers.set("Content-Type", "application/sdp")
    assert w.transact(invite, auth=False).status == 200      # joins #club (its connection registered it)
    pal.read_until(lambda l: l.startswith(":watcher!") and "JOIN" in l)
    assert subscribe(w, "pal").status == 200
    assert basic(w.wait_request("NOTIFY")) == "open"
    w.close()
    pal.close()
