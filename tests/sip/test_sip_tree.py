"""SIP across configs/tree-3 (a -- b -- c): a user agent registered on each end. Bindings are known on
every server, MESSAGE and a call (INVITE/200/ACK/BYE) cross the tree through both proxies, and the
in-dialog requests follow the Record-Route over the same servers."""

from __future__ import annotations

import pytest
import yaml
from sipua import UA
from support import TreeNetwork, free_port, wait_for

from bridges.sip.transaction import make_ack


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    net = TreeNetwork("tree-3", tmp_path_factory.mktemp("siptree"), modules={"sip": {}})
    names = list(net.servers)
    for name in (names[0], names[-1]):          # SIP listeners on the two ends (UDP and TCP, one port)
        srv = net[name]
        port = free_port()
        srv.config["listen"] += [{"proto": "sip", "host": "127.0.0.1", "port": port, "transport": "udp"},
                                 {"proto": "sip", "host": "127.0.0.1", "port": port}]
        srv.path.write_text(yaml.safe_dump(srv.config))
        srv.sip_port = port
    net.start()
    first, last = net[names[0]], net[names[-1]]
    first.ctl("register", "alice", "alice-pw")
    last.ctl("register", "bob", "bob-pw")
    net.ends = (first, last)
    yield net
    net.stop()
    for srv in net.servers.values():
        assert "Traceback" not in srv.log(), srv.log()[-3000:]


def registered_everywhere(net, account: str, transport="UDP") -> UA:
    first, last = net.ends
    home = first if account == "alice" else last
    u = UA(home.sip_port, account, f"{account}-pw", transport=transport)
    assert u.register(600).status == 200
    home_id = home.config["server"]["id"]
    for srv in net.servers.values():               # every server learns where the binding is
        wait_for(lambda: any(b["account"] == account and b["server"] == home_id and b["contact"] == u.contact
                             for b in srv.call("sip", "bindings")), what=f"{account}'s binding on {srv.dir.name}")
    return u


def send_authorized(u: UA, req) -> None:
    """Send, take the 407, send again with credentials (the answer comes once the callee answers)."""
    u.send(req)
    challenge = final(u)
    assert challenge.status == 407, challenge.status
    u.send(u.authorized(req, challenge))


def final(u: UA):
    r = u.next_message()
    while r.status < 200:
        r = u.next_message()
    return r


def test_message_both_ways_across_the_tree(tree):
    a = registered_everywhere(tree, "alice")
    b = registered_everywhere(tree, "bob", transport="TCP")
    try:
        send_authorized(a, a.request("MESSAGE", "sip:bob@localhost", body=b"hello from a"))
        got = b.wait_request("MESSAGE")
        r = final(a)
        assert got.body == b"hello from a" and got.from_.uri.user == "alice"
        assert len(got.vias) == 3                      # alice, server a, server c: proxied, not bridged
        assert got.headers.get("P-Asserted-Identity") is None   # the assertion does not leave the tree
        assert r.status == 200                         # bob's own 200, back over the tree
        b.send(b.request("MESSAGE", "sip:alice@localhost", body=b"hello from c"))   # no challenge: bob's
        # connection registered bob, and his server asserts him to the others
        got = a.wait_request("MESSAGE")
        r = final(b)
        assert got.body == b"hello from c" and len(got.vias) == 3 and r.status == 200
        stats = tree.ends[0].call("sip", "stats")
        assert stats["link_req_out"] >= 1 and stats["link_rsp_in"] >= 1
    finally:
        for x in (a, b):
            x.register(0)
            x.close()


def test_a_spoofed_identity_from_a_user_agent_is_not_trusted(tree):
    a = registered_everywhere(tree, "alice")
    try:
        req = a.request("MESSAGE", "sip:bob@localhost", body=b"x", from_user="bob",
                        extra=[("P-Asserted-Identity", "<sip:bob@localhost>")])
        r = a.transact(req)
        assert r.status == 403 and "From" in r.reason
    finally:
        a.register(0)
        a.close()


def test_a_call_across_the_tree_and_its_in_dialog_requests(tree):
    a = registered_everywhere(tree, "alice")
    b = registered_everywhere(tree, "bob")
    try:
        invite = a.request("INVITE", "sip:bob@localhost", extra=[("Contact", f"<{a.contact}>")])
        a.send(invite)
        challenge = final(a)
        assert challenge.status == 407
        a.send(make_ack(invite, challenge))
        a.send(a.authorized(invite, challenge))
        got = b.wait_request("INVITE")                 # bob's UA answers 200 with the Record-Routes
        routes = got.headers.values("Record-Route")
        assert len(routes) == 2 and len(got.vias) == 3, routes
        ok = final(a)
        assert ok.status == 200
        route_set = list(reversed(ok.headers.values("Record-Route")))   # the UAC's route set
        assert str(a.server[1]) in route_set[0]        # first hop: the server alice called
        remote, to = str(ok.contacts[0].uri), ok.headers.get("To")
        for method in ("ACK", "BYE"):
            req = a.request(method, remote, extra=[("Route", r) for r in route_set])
            req.headers.set("To", to)
            if method == "ACK":
                req.headers.set("CSeq", ok.headers.get("CSeq").replace("INVITE", "ACK"))
            a.send(req)
            arrived = b.wait_request(method)
            assert len(arrived.vias) == 3 and arrived.headers.get("Route") is None, method
        assert final(a).status == 200                  # the BYE's 200, back over the tree
        # And the callee's BYE of a second call goes the other way over the same route.
        invite = a.request("INVITE", "sip:bob@localhost", extra=[("Contact", f"<{a.contact}>")])
        a.call_id = invite.call_id
        a.send(invite)
        challenge = final(a)
        a.send(make_ack(invite, challenge))
        a.send(a.authorized(invite, challenge))
        got = b.wait_request("INVITE")
        ok = final(a)
        ack = a.request("ACK", str(ok.contacts[0].uri),
                        extra=[("Route", r) for r in reversed(ok.headers.values("Record-Route"))])
        ack.headers.set("To", ok.headers.get("To"))
        ack.headers.set("CSeq", ok.headers.get("CSeq").replace("INVITE", "ACK"))
        a.send(ack)
        b.wait_request("ACK")
        bye = b.request("BYE", str(got.contacts[0].uri), extra=[("Route", r) for r in got.headers.values("Record-Route")])
        bye.headers.set("From", ok.headers.get("To"))
        bye.headers.set("To", got.headers.get("From"))
        bye.headers.set("Call-ID", got.call_id)
        b.send(bye)
        arrived = a.wait_request("BYE")
        assert len(arrived.vias) == 3
        assert final(b).status == 200
    finally:
        for x in (a, b):
            x.register(0)
            x.close()
