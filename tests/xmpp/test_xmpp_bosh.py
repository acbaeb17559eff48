"""BOSH (XEP-0124/0206) in memory: session creation with the stream features, SASL and a restart, bind,
long polling (a held request answered when a stanza arrives, or empty after `wait`), request ids,
terminate, inactivity; and on a real server over HTTP, a BOSH client chatting with a slixmpp client."""

from __future__ import annotations

import asyncio
import base64
import http.client
import threading

import pytest
from lxml import etree
from xmpp_ext_support import Xmpp, wire

from relay.core.http_routes import DeferredResponse, HttpRequest

B = "http://jabber.org/protocol/httpbind"
HEAD = f"<body xmlns='{B}' xmlns:xmpp='urn:xmpp:xbosh'"


class Bosh:
    """A BOSH client calling the route as the HTTP listener does."""

    def __init__(self, w, wait: int = 30):
        self.w = w
        self.route = w.cores["a"].http.find_http("/http-bind")
        self.rid = 1000
        first = self.post(f"{HEAD} rid='{self.rid}' to='localhost' wait='{wait}' hold='1' ver='1.6' "
                          "xmpp:version='1.0'/>")
        self.sid = first.get("sid")
        self.created = first

    def raw(self, text: str):
        req = HttpRequest("POST", "/http-bind", "/http-bind", "", [], text.encode(), "127.0.0.1", True)
        return self.route.handler(req, self.w.now)

    def post(self, text: str):
        resp = self.raw(text)
        if isinstance(resp, DeferredResponse):
            return Bosh.body(resp) if resp.done else resp      # answered at once, or held
        assert resp.status == 200, resp.body
        return etree.fromstring(resp.body)

    def send(self, inner: str = "", extra: str = ""):
        self.rid += 1
        return self.post(f"{HEAD} rid='{self.rid}' sid='{self.sid}'{extra}>{inner}</body>")

    @staticmethod
    def body(d: DeferredResponse):
        got = []
        d.attach(lambda r: got.append(r))
        assert got, "not answered yet"
        return etree.fromstring(got[0].body)

    def login(self, account="alice", resource="bosh"):
        plain = base64.b64encode(f"\0{account}\0secret".encode()).decode()
        ok = self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>")
        assert ok[0].tag.endswith("success")
        feats = self.send(extra=" xmpp:restart='true'")
        assert "bind" in etree.tostring(feats).decode()
        bound = self.send("<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                          f"<resource>{resource}</resource></bind></iq>")
        assert bound.findtext(".//{urn:ietf:params:xml:ns:xmpp-bind}jid") == f"{account}@localhost/{resource}"
        return self


@pytest.fixture
def w(tmp_path):
    return wire(tmp_path)


def test_session_creation_login_and_long_polling(w):
    b = Bosh(w)
    c = b.created
    assert c.get("sid") and c.get("wait") == "30" and c.get("hold") == "1" and c.get("requests") == "2"
    assert c.get("{urn:xmpp:xbosh}version") == "1.0"
    assert "PLAIN" in etree.tostring(c).decode()
    b.login()
    bob = Xmpp(w).login("bob")
    held = b.send("<presence xmlns='jabber:client'/>")
    assert isinstance(held, DeferredResponse) and not held.done     # nothing to say: held
    bob.feed("<message type='chat' to='alice@localhost' id='m'><body>to bosh</body></message>")
    assert held.done
    got = Bosh.body(held)
    assert got[0].findtext("{jabber:client}body") == "to bosh" and got[0].get("from") == "bob@localhost/r"
    # A held request is answered empty after `wait`.
    idle = b.send()
    w.tick(31)
    assert idle.done and len(Bosh.body(idle)) == 0
    # Chat from BOSH to TCP.
    out = b.send("<message xmlns='jabber:client' type='chat' to='bob@localhost'><body>from bosh</body></message>")
    assert b"from bosh" in bob.take()
    # A newer request sends the held one back empty.
    newer = b.send()
    assert out.done and not newer.done


def test_request_ids_and_terminate(w):
    b = Bosh(w)
    b.login()
    again = b.post(f"{HEAD} rid='{b.rid}' sid='{b.sid}'/>")            # a retransmission: the same answer
    assert again.findtext(".//{urn:ietf:params:xml:ns:xmpp-bind}jid") == "alice@localhost/bosh"
    svc = w.cores["a"].services["xmpp"]
    assert any(a.local == "alice" for a in svc.accounts)
    # One ahead of its turn waits for the one before; it is then answered in order.
    ahead = b.post(f"{HEAD} rid='{b.rid + 2}' sid='{b.sid}'><iq xmlns='jabber:client' type='get' id='p2'>"
                   "<ping xmlns='urn:xmpp:ping'/></iq></body>")
    assert isinstance(ahead, DeferredResponse) and not ahead.done
    turn = b.send("<iq xmlns='jabber:client' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert turn[0].get("id") == "p1"
    b.rid += 1
    assert ahead.done and Bosh.body(ahead)[0].get("id") == "p2"
    bad = b.post(f"{HEAD} rid='{b.rid + 5}' sid='{b.sid}'/>")
    assert bad.get("type") == "terminate" and bad.get("condition") == "item-not-found"
    assert not any(a.local == "alice" for a in svc.accounts)            # the session is gone
    assert b.send().get("condition") == "item-not-found"


def test_client_terminate_and_inactivity(w):
    b = Bosh(w)
    b.login()
    end = b.send("<presence xmlns='jabber:client' type='unavailable'/>", " type='terminate'")
    assert end.get("type") == "terminate"
    svc = w.cores["a"].services["xmpp"]
    assert not svc.accounts and not svc.bosh.sessions
    idle = Bosh(w)
    idle.login()
    w.tick(61)
    w.tick(1)
    assert not svc.bosh.sessions and not svc.accounts


def test_plain_http_from_afar_is_offered_no_sasl(w):
    route = w.cores["a"].http.find_http("/http-bind")
    req = HttpRequest("POST", "/http-bind", "/http-bind", "", [], f"{HEAD} rid='1' to='localhost' wait='5'/>".encode(),
                      "192.0.2.9", False)
    created = etree.fromstring(route.handler(req, w.now).body)
    assert created.get("sid") and "mechanism" not in etree.tostring(created).decode()


def test_bad_requests(w):
    b = Bosh(w)
    assert b.raw("<body xmlns='wrong'/>").status == 400
    assert b.raw("<!DOCTYPE x [<!ENTITY a 'b'>]><body xmlns='%s'/>" % B).status == 400
    assert b.raw("not xml").status == 400
    host = b.post(f"{HEAD} rid='1' to='elsewhere' wait='10' hold='1'/>")
    assert host.get("condition") == "host-unknown"
    assert b.post(f"{HEAD} rid='1' sid='nope'/>").get("condition") == "item-not-found"
    get = HttpRequest("GET", "/http-bind", "/http-bind", "", [], b"", "127.0.0.1", True)
    assert b.route.handler(get, w.now).status == 405


# ---------------------------------------------------------------- live

slixmpp = pytest.importorskip("slixmpp")


def test_a_bosh_client_over_http_chats_with_slixmpp(tmp_path):
    from xmpp_ext_support import ext_server
    from xmpp_live import WAIT, Inbox, make_client, offline, online

    srv = ext_server(tmp_path / "x")
    port = srv.ports["http"]
    rid = [5000]
    sid = [None]

    def post(inner: str = "", extra: str = "", first: bool = False) -> etree._Element:
        rid[0] += 1
        attrs = " to='localhost' wait='20' hold='1' ver='1.6' xmpp:version='1.0'" if first else f" sid='{sid[0]}'"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
        conn.request("POST", "/http-bind", f"{HEAD} rid='{rid[0]}'{attrs}{extra}>{inner}</body>".encode(),
                     {"Content-Type": "text/xml; charset=utf-8"})
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        assert resp.status == 200, data
        return etree.fromstring(data)

    try:
        created = post(first=True)
        sid[0] = created.get("sid")
        assert "SCRAM-SHA-256" in etree.tostring(created).decode()
        plain = base64.b64encode(b"\0alice\0secret").decode()
        assert post(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>")[0].tag \
            .endswith("success")
        post(extra=" xmpp:restart='true'")
        post("<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
             "<resource>bosh</resource></bind></iq>")

        async def main():
            bob = await online(make_client(slixmpp, "bob@localhost/desk", "secret", srv), srv)
            got = Inbox(bob, "message")
            # A long poll waits in a thread while bob writes.
            result: list = []
            poller = threading.Thread(target=lambda: result.append(post("<presence xmlns='jabber:client'/>")))
            poller.start()
            await asyncio.to_thread(post, "<message xmlns='jabber:client' type='chat' to='bob@localhost'>"
                                          "<body>hello from bosh</body></message>")
            msg = await got.wait(lambda m: m["body"] == "hello from bosh", "the BOSH client's message")
            assert str(msg["from"]) == "alice@localhost/bosh"
            await asyncio.to_thread(poller.join, WAIT)
            bodies = []
            for _ in range(5):
                bob.send_message(mto="alice@localhost/bosh", mbody="hello back", mtype="chat")
                answer = await asyncio.to_thread(post)
                bodies = [m.findtext("{jabber:client}body") for m in answer]
                if "hello back" in bodies:
                    break
            assert "hello back" in bodies
            await offline(bob)
        asyncio.run(main())
        assert post(extra=" type='terminate'").get("type") == "terminate"
    finally:
        srv.stop()


def test_hostile_bodies_never_raise(tmp_path):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    w = wire(tmp_path)
    b = Bosh(w)
    b.login()
    pieces = st.sampled_from([f"{HEAD} rid='1' to='localhost'>", f"{HEAD} sid='{b.sid}' rid='{b.rid + 1}'>",
                              "<message xmlns='jabber:client'>", "</body>", "<![CDATA[x]]>", "&lt;", "&xx;",
                              "<!ENTITY", "<?pi?>", "<iq xmlns='jabber:client' type='get'/>", "\xff", "<"])

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.one_of(st.binary(max_size=200), st.lists(pieces, max_size=8).map(lambda p: "".join(p).encode())))
    def check(data):
        req = HttpRequest("POST", "/http-bind", "/http-bind", "", [], data, "127.0.0.1", True)
        resp = b.route.handler(req, w.now)
        assert isinstance(resp, DeferredResponse) or resp.status in (200, 400)
    check()
    assert w.cores["a"].services["xmpp"] is not None
