"""The sip module on a real server: registrar, proxy and the mapping onto the network, driven over UDP
and TCP by a small user agent (sipua) and by an IRC client."""

from __future__ import annotations

import pytest
from sipua import UA
from support import RawClient, Server, free_port, server_config, wait_for

from bridges.sip.digest import parse_challenge


@pytest.fixture(scope="module")
def sip_server(tmp_path_factory):
    irc, sip = free_port(), free_port()
    cfg = server_config(listen=[{"proto": "irc", "host": "127.0.0.1", "port": irc},
                                {"proto": "sip", "host": "127.0.0.1", "port": sip, "transport": "udp"},
                                {"proto": "sip", "host": "127.0.0.1", "port": sip}],
                        modules={"sip": {}}, sip={"min_expires": 30})
    srv = Server(tmp_path_factory.mktemp("sip"), cfg).start()
    srv.sip_port = sip
    for name in ("alice", "bob", "carol", "dave"):
        srv.ctl("register", name, f"{name}-pw")
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-3000:]


def ua(srv, user=None, **kw) -> UA:
    return UA(srv.sip_port, user, f"{user}-pw" if user else None, **kw)


def whois(srv, nick: str) -> list[str]:
    c = RawClient(srv.irc_port).register(f"w{free_port() % 10000}")
    c.send(f"WHOIS {nick}")
    c.read_until(" 318 ")
    c.close()
    return [l for l in c.lines if f" {nick} " in l]


def test_options_to_the_server_is_answered_with_its_capabilities(sip_server):
    u = ua(sip_server, "x")
    r = u.transact(u.request("OPTIONS", f"sip:127.0.0.1:{sip_server.sip_port}"), auth=False)
    assert r.status == 200
    assert "MESSAGE" in r.headers.get("Allow") and "REGISTER" in r.headers.get("Allow")
    assert "text/plain" in r.headers.get("Accept") and r.headers.get("Supported") is not None
    u.close()


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
def test_register_with_digest_makes_a_network_member_and_unregister_quits_it(sip_server, transport):
    u = ua(sip_server, "alice", transport=transport)
    req = u.request("REGISTER", "sip:localhost", to="sip:alice@localhost",
                    extra=[("Contact", f"<{u.contact}>"), ("Expires", "600")])
    u.send(req)
    challenge = u.next_message()
    assert challenge.status == 401
    algorithms = [parse_challenge(v)["algorithm"] for v in challenge.headers.fields("WWW-Authenticate")]
    assert algorithms == ["MD5", "SHA-256"]  # MD5 first: sipsak answers the first one
    r = u.register(600)
    assert r.status == 200
    assert any(u.contact in c for c in r.headers.values("Contact"))
    lines = whois(sip_server, "alice")
    assert any(" 320 " in l and "SIP" in l for l in lines), lines
    assert u.register(0).status == 200
    wait_for(lambda: any(" 401 " in l for l in whois(sip_server, "alice")), what="alice quit")
    u.close()


def test_sha256_digest_registers(sip_server):
    u = ua(sip_server, "carol")
    req = u.request("REGISTER", "sip:localhost", to="sip:carol@localhost",
                    extra=[("Contact", f"<{u.contact}>"), ("Expires", "600")])
    u.send(req)
    challenge = u.next_message()
    sha = next(parse_challenge(v) for v in challenge.headers.fields("WWW-Authenticate")
               if parse_challenge(v)["algorithm"] == "SHA-256")
    from bridges.sip.digest import authorization
    u.cseq = 5
    req.headers.set("CSeq", "5 REGISTER")
    req.headers.set("Via", f"SIP/2.0/UDP {u.addr}:{u.port};branch=z9hG4bKsha256again;rport")
    req.headers.add("Authorization", authorization("carol", sha["realm"], "carol-pw", sha["nonce"], "REGISTER",
                                                   "sip:localhost", "SHA-256"))
    u.send(req)
    assert u.next_message().status == 200
    assert u.register(0).status == 200
    u.close()


def test_register_of_someone_elses_aor_is_forbidden(sip_server):
    u = ua(sip_server, "bob")
    req = u.request("REGISTER", "sip:localhost", to="sip:alice@localhost",
                    extra=[("Contact", f"<{u.contact}>"), ("Expires", "600")])
    r = u.transact(req)
    assert r.status == 403 and "own address" in r.reason
    u.close()


def test_too_brief_expires_gets_423_with_min_expires(sip_server):
    u = ua(sip_server, "bob")
    r = u.register(5)
    assert r.status == 423 and r.headers.get("Min-Expires") == "30"
    u.close()


def test_several_contacts_and_contact_star_removes_them_all(sip_server):
    u = ua(sip_server, "dave")
    assert u.register(600, contact="sip:dave@127.0.0.1:5991").status == 200
    r = u.register(600, contact="sip:dave@127.0.0.1:5992")
    assert r.status == 200
    assert sorted(c for c in r.headers.values("Contact")) == [
        "<sip:dave@127.0.0.1:5991>;expires=600", "<sip:dave@127.0.0.1:5992>;expires=600"]
    star = u.request("REGISTER", "sip:localhost", to="sip:dave@localhost",
                     extra=[("Contact", "*"), ("Expires", "0")])
    assert u.transact(star).status == 200
    assert sip_server.call("sip", "bindings") == [] or all(b["account"] != "dave" for b in sip_server.call("sip", "bindings"))
    u.close()


def test_replayed_nonce_count_is_refused(sip_server):
    u = ua(sip_server, "bob")
    assert u.register(600).status == 200
    replay = u.last_authorized
    replay.headers.set("CSeq", "99 REGISTER")
    replay.headers.set("Via", f"SIP/2.0/UDP {u.addr}:{u.port};branch=z9hG4bKreplayed;rport")
    u.send(replay)                          # same nonce and nc, new CSeq: a replay
    r = u.next_message()
    assert r.status == 403 and "replayed" in r.reason
    u.register(0)
    u.close()


def test_message_between_sip_and_irc(sip_server):
    u = ua(sip_server, "alice")
    assert u.register(600).status == 200
    irc = RawClient(sip_server.irc_port).register("ircbob")
    r = u.transact(u.request("MESSAGE", "sip:ircbob@localhost", body=b"hello from sip"))
    assert r.status == 202
    assert irc.read_until("PRIVMSG ircbob").endswith(":hello from sip")
    assert irc.lines[-1].startswith(":alice!")
    irc.send("PRIVMSG alice :hello from irc")
    got = u.wait_request("MESSAGE")
    assert got.body == b"hello from irc" and got.from_.uri.user == "ircbob"
    irc.close()
    u.register(0)
    u.close()


def test_message_between_two_sip_users_is_proxied_to_each_contact(sip_server):
    a, b1, b2 = ua(sip_server, "alice"), ua(sip_server, "bob"), ua(sip_server, "bob", transport="TCP")
    for x in (a, b1, b2):
        assert x.register(600).status == 200
    req = a.request("MESSAGE", "sip:bob@localhost", body=b"fork me")
    a.send(req)
    a.send(a.authorized(req, a.next_message()))
    for b in (b1, b2):
        got = b.wait_request("MESSAGE")
        assert got.body == b"fork me"
        assert int(got.headers.get("Max-Forwards")) == 69
        assert len(got.vias) == 2
    assert a.next_message().status == 200  # the first 200 goes back at once
    for x in (a, b1, b2):
        x.register(0)
        x.close()


def test_spoofed_from_is_refused(sip_server):
    u = ua(sip_server, "alice")
    r = u.transact(u.request("MESSAGE", "sip:bob@localhost", body=b"i am bob", from_user="bob"))
    assert r.status == 403 and "From" in r.reason
    u.close()


def test_unauthenticated_message_is_challenged_407(sip_server):
    u = ua(sip_server, "alice")
    u.send(u.request("MESSAGE", "sip:bob@localhost", body=b"hi"))
    r = u.next_message()
    assert r.status == 407 and r.headers.get("Proxy-Authenticate")
    u.close()


def test_relaying_to_a_foreign_domain_is_refused_and_loops_are_detected(sip_server):
    u = ua(sip_server, "alice")
    r = u.transact(u.request("MESSAGE", "sip:someone@example.com", body=b"x"), auth=False)
    assert r.status == 403
    req = u.request("OPTIONS", "sip:localhost", extra=[("Max-Forwards", "0")])
    req.headers.set("Max-Forwards", "0")
    assert u.transact(req, auth=False).status == 200   # for the server itself: answered, not forwarded
    u.close()


def test_flood_from_one_source_is_dropped_while_another_is_served(tmp_path):
    sip = free_port()
    cfg = server_config(listen=[{"proto": "irc", "host": "127.0.0.1", "port": free_port()},
                                {"proto": "sip", "host": "127.0.0.1", "port": sip, "transport": "udp"}],
                        modules={"sip": {"requests_per_second": 0.001, "request_burst": 20}})  # no refill during the test
    srv = Server(tmp_path / "flood", cfg).start()
    try:
        flooder = UA(sip, "f", bind="127.0.0.3")
        for _ in range(300):
            flooder.send(flooder.request("OPTIONS", "sip:localhost"))
        answered = 0
        try:
            while True:
                flooder.next_message(timeout=1.0)
                answered += 1
        except (TimeoutError, OSError):
            pass
        assert 1 <= answered <= 20, answered    # the burst, whatever the pace; the rest unanswered
        good = UA(sip, "g", bind="127.0.0.2")
        assert good.transact(good.request("OPTIONS", "sip:localhost"), auth=False).status == 200
        stats = srv.call("sip", "stats")
        assert stats["dropped_rate"] > 0 and stats["received"] - stats["dropped_rate"] == answered + 1
    finally:
        srv.stop()


def test_message_to_a_conference_posts_to_the_channel_if_the_sender_may_speak(sip_server):
    u = ua(sip_server, "alice")
    assert u.register(600).status == 200
    op = RawClient(sip_server.irc_port).register("roomop")
    op.send("JOIN #room")
    op.read_until(" 366 ")
    r = u.transact(u.request("MESSAGE", "sip:room@conference.localhost", body=b"knock knock"))
    assert r.status == 403 and "join #room" in r.reason     # +n: members only
    op.send("MODE #room -n")
    op.read_until("MODE #room -n")
    r = u.transact(u.request("MESSAGE", "sip:room@conference.localhost", body=b"hello room"))
    assert r.status == 202
    line = op.read_until("PRIVMSG #room")
    assert line.startswith(":alice!") and line.endswith(":hello room")
    op.close()
    u.register(0)
    u.close()


def test_registrations_survive_a_restart(tmp_path):
    irc, sip = free_port(), free_port()
    cfg = server_config(listen=[{"proto": "irc", "host": "127.0.0.1", "port": irc},
                                {"proto": "sip", "host": "127.0.0.1", "port": sip, "transport": "udp"}],
                        modules={"sip": {}})
    srv = Server(tmp_path / "restart", cfg).start()
    try:
        srv.ctl("register", "erin", "erin-pw")
        u = UA(sip, "erin", "erin-pw")
        assert u.register(600).status == 200
        srv.stop()
        srv.start()
        assert [b["contact"] for b in srv.call("sip", "bindings")] == [u.contact]
        assert any(" 320 " in l for l in whois(srv, "erin"))       # a member again
        irc_c = RawClient(irc).register("ircfan")
        irc_c.send("PRIVMSG erin :still there?")
        assert u.wait_request("MESSAGE").body == b"still there?"  # reached over the restored binding
        irc_c.close()
        u.close()
    finally:
        srv.stop()


def test_a_call_goes_through_the_proxy_and_its_in_dialog_requests_follow_the_record_route(sip_server):
    a, b = ua(sip_server, "alice"), ua(sip_server, "bob", transport="TCP")
    for x in (a, b):
        assert x.register(600).status == 200
    invite = a.request("INVITE", "sip:bob@localhost", extra=[("Contact", f"<{a.contact}>")])
    a.send(invite)
    challenge = a.next_message()
    while challenge.status < 200:
        challenge = a.next_message()
    from bridges.sip.transaction import make_ack
    a.send(make_ack(invite, challenge))            # the ACK of the 407 (same branch as the INVITE)
    a.send(a.authorized(invite, challenge))
    got = b.wait_request("INVITE")                  # answered 200 with Record-Route and Contact
    assert got.headers.get("Record-Route").endswith(";lr>") and len(got.vias) == 2
    ok = a.next_message()
    while ok.status < 200:
        ok = a.next_message()
    assert ok.status == 200
    route, remote = ok.headers.get("Record-Route"), ok.contacts[0].uri
    dialog = [("Route", route)]
    to = ok.headers.get("To")
    for method in ("ACK", "BYE"):
        req = a.request(method, str(remote), extra=dialog)
        req.headers.set("To", to)
        req.headers.set("CSeq", f"{a.cseq - 1 if method == 'ACK' else a.cseq} {method}")
        if method == "ACK":
            req.headers.set("CSeq", ok.headers.get("CSeq").replace("INVITE", "ACK"))
        a.send(req)
        arrived = b.wait_request(method)
        assert len(arrived.vias) == 2 and arrived.headers.get("Route") is None  # through us, our Route off
    assert a.next_message().status == 200          # the BYE's 200, back through the proxy
    for x in (a, b):
        x.register(0)
        x.close()


def test_invite_to_a_conference_joins_the_channel_and_bye_leaves(sip_server):
    u = ua(sip_server, "alice")
    assert u.register(600).status == 200
    op = RawClient(sip_server.irc_port).register("confop")
    op.send("JOIN #talk")
    op.read_until(" 366 ")
    offer = (b"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
             b"m=audio 4000 RTP/AVP 0 8\r\nm=video 4002 RTP/AVP 96\r\n")
    invite = u.request("INVITE", "sip:talk@conference.localhost", extra=[("Contact", f"<{u.contact}>")],
                       body=offer)
    invite.headers.set("Content-Type", "application/sdp")
    u.send(invite)
    challenge = u.next_message()
    while challenge.status < 200:
        challenge = u.next_message()
    from bridges.sip.transaction import make_ack
    u.send(make_ack(invite, challenge))
    u.send(u.authorized(invite, challenge))
    ok = u.next_message()
    while ok.status < 200:
        ok = u.next_message()
    assert ok.status == 200 and ok.content_type == "application/sdp"
    media = [l for l in ok.body.decode().splitlines() if l.startswith("m=")]
    assert media == ["m=audio 0 RTP/AVP 0", "m=video 0 RTP/AVP 96"]   # every stream declined
    assert op.read_until("JOIN").startswith(":alice!")
    to, remote = ok.headers.get("To"), str(ok.contacts[0].uri)
    for method, body in (("ACK", b""), ("MESSAGE", b"hi all")):
        req = u.request(method, remote, body=body)
        req.headers.set("To", to)
        if method == "ACK":
            req.headers.set("CSeq", ok.headers.get("CSeq").replace("INVITE", "ACK"))
        u.send(req)
        if method != "ACK":
            assert u.next_message().status == 200
    assert op.read_until("PRIVMSG #talk").endswith(":hi all")          # a message inside the dialog
    op.send("PRIVMSG #talk :welcome alice")
    got = u.wait_request("MESSAGE")                                      # channel traffic, in the dialog
    assert got.body == b"<confop> welcome alice" and got.call_id == invite.call_id
    assert got.from_.tag == ok.to.tag and got.to.tag == invite.from_.tag
    bye = u.request("BYE", remote)
    bye.headers.set("To", to)
    u.send(bye)
    assert u.next_message().status == 200
    assert op.read_until("PART #talk").startswith(":alice!")
    op.close()
    u.register(0)
    u.close()


def test_crlf_keepalives_on_tcp_are_answered(sip_server):
    import socket
    with socket.create_connection(("127.0.0.1", sip_server.sip_port), timeout=10) as s:
        s.sendall(b"\r\n\r\n")                      # RFC 5626 §4.4.1: ping
        assert s.recv(16) == b"\r\n"                # pong
        s.sendall(b"\r\n\r\n")
        assert s.recv(16) == b"\r\n"


def test_an_outbound_flow_that_dies_takes_its_bindings(sip_server):
    u = ua(sip_server, "carol", transport="TCP")
    contact = f'<{u.contact}>;reg-id=1;+sip.instance="<urn:uuid:00000000-0000-0000-0000-00000000c0de>"'
    req = u.request("REGISTER", "sip:localhost", to="sip:carol@localhost",
                    extra=[("Contact", contact), ("Expires", "600"), ("Supported", "outbound, path")])
    r = u.transact(req)
    assert r.status == 200 and r.headers.get("Require") == "outbound"
    assert any(b["account"] == "carol" for b in sip_server.call("sip", "bindings"))
    assert any(" 320 " in l for l in whois(sip_server, "carol"))
    u.close()                                       # the flow dies
    wait_for(lambda: all(b["account"] != "carol" for b in sip_server.call("sip", "bindings")),
             what="carol's bindings gone with the flow")
    wait_for(lambda: any(" 401 " in l for l in whois(sip_server, "carol")), what="carol quit")


def test_a_kick_from_irc_ends_the_conference_call_with_bye(sip_server):
    u = ua(sip_server, "dave")
    assert u.register(600).status == 200
    op = RawClient(sip_server.irc_port).register("kickop")
    op.send("JOIN #kicks")
    op.read_until(" 366 ")
    invite = u.request("INVITE", "sip:kicks@conference.localhost", extra=[("Contact", f"<{u.contact}>")])
    u.send(invite)
    challenge = u.next_message()
    while challenge.status < 200:
        challenge = u.next_message()
    from bridges.sip.transaction import make_ack
    u.send(make_ack(invite, challenge))
    u.send(u.authorized(invite, challenge))
    ok = u.next_message()
    while ok.status < 200:
        ok = u.next_message()
    assert ok.status == 200
    assert op.read_until("JOIN").startswith(":dave!")
    op.send("KICK #kicks dave :enough")
    assert "KICK #kicks dave" in op.read_until("KICK")
    bye = u.wait_request("BYE")                     # the server ends the dialog (our UA answers 200)
    assert bye.call_id == invite.call_id and bye.from_.tag == ok.to.tag
    op.close()
    u.register(0)
    u.close()


def test_a_request_over_the_connection_that_registered_needs_no_challenge(sip_server):
    """Connections (TCP here) that carry a live REGISTER of the From user count as authenticated; any
    other connection or a UDP source (trust_registered_udp_source is off) is challenged as before."""
    irc = RawClient(sip_server.irc_port).register("flowirc")
    reg = ua(sip_server, "carol", transport="TCP")
    assert reg.register(600).status == 200
    r = reg.transact(reg.request("MESSAGE", "sip:flowirc@localhost", body=b"over my flow"), auth=False)
    assert r.status == 202
    assert irc.read_until("PRIVMSG flowirc").endswith(":over my flow")
    other = ua(sip_server, "carol", transport="TCP")          # another connection, the same From
    other.send(other.request("MESSAGE", "sip:flowirc@localhost", body=b"spoofed"))
    assert other.next_message().status == 407
    udp = ua(sip_server, "dave")
    assert udp.register(600).status == 200
    udp.send(udp.request("MESSAGE", "sip:flowirc@localhost", body=b"udp"))
    assert udp.next_message().status == 407                  # UDP sources are not trusted by default
    for u in (reg, udp):
        u.register(0)
        u.close()
    other.close()
    irc.close()
