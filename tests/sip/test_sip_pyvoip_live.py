"""pyVoIP as a real user agent: it registers with digest, but only in RFC 2069's form (no qop, no
nonce-count) and with a digest uri of `sip:<server>;transport=UDP`, so the server accepts it only with
`allow_digest_without_qop: true` (off by default). Its INVITE never answers a 407 (pyVoIP 1.6.8), so
its calls are authenticated by the UDP source it registered from (`trust_registered_udp_source: true`,
off by default); it ignores Record-Route (in-dialog requests go to the contacts registered here) and
hangs up with a BYE that has no To tag (accepted by the conference over the dialog's own flow)."""

from __future__ import annotations

import pytest
from sipua import UA
from support import RawClient, Server, free_port, server_config, wait_for

VoIP = pytest.importorskip("pyVoIP.VoIP")
from pyVoIP.SIP import SIPMessageType  # noqa: E402  (after the skip)


@pytest.fixture
def srv(tmp_path):
    sip, irc = free_port(), free_port()
    cfg = server_config(listen=[{"proto": "irc", "host": "127.0.0.1", "port": irc},
                                {"proto": "sip", "host": "127.0.0.1", "port": sip, "transport": "udp"}],
                        modules={"sip": {"allow_digest_without_qop": True, "algorithms": ["MD5"],
                                         "trust_registered_udp_source": True, "domain": "sip.test",
                                         # pyVoIP calls sip:<number>@<the host it registers with>
                                         "conference_domain": "localhost"}})
    s = Server(tmp_path / "pyvoip", cfg).start()
    s.sip_port = sip
    for name in ("alice", "bob", "carol"):
        s.ctl("register", name, f"{name}-pw")
    yield s
    s.stop()
    assert "Traceback" not in s.log(), s.log()[-3000:]


class Phone:
    """A started pyVoIP phone that records what reaches it (requests by method, responses by status)."""

    def __init__(self, srv, user: str, answer: bool = False, server: str = "127.0.0.1"):
        self.calls: list = []
        self.received: list[str] = []
        rtp = free_port()
        self.phone = VoIP.VoIPPhone(server, srv.sip_port, user, f"{user}-pw", myIP="127.0.0.1",
                                    sipPort=free_port(), rtpPortLow=rtp, rtpPortHigh=rtp,
                                    callCallback=self._ringing if answer else None)
        parse = self.phone.sip.parse_message

        def recorded(message):
            request = message.type == SIPMessageType.MESSAGE   # pyVoIP's name for a request
            self.received.append(message.method if request else str(message.status.value))
            parse(message)
        self.phone.sip.parse_message = recorded
        self.phone.start()
        assert self.phone.get_status() == VoIP.PhoneStatus.REGISTERED

    def _ringing(self, call):
        self.calls.append(call)
        call.answer()

    def stop(self):
        self.phone.stop()


def test_pyvoip_registers_and_unregisters(srv):
    phone = Phone(srv, "alice")
    try:
        [binding] = srv.call("sip", "bindings")
        assert binding["account"] == "alice" and binding["contact"].startswith("sip:alice@127.0.0.1:")
    finally:
        phone.stop()                                  # un-REGISTER (Expires: 0)
    wait_for(lambda: srv.call("sip", "bindings") == [], what="pyVoIP's binding removed")


def test_pyvoip_calls_another_pyvoip_phone_through_the_proxy(srv):
    bob = Phone(srv, "bob", answer=True)
    alice = Phone(srv, "alice")
    try:
        call = alice.phone.call("bob")
        wait_for(lambda: call.state == VoIP.CallState.ANSWERED, what="the call answered (200)")
        wait_for(lambda: "ACK" in bob.received, what="the caller's ACK at the callee")
        assert bob.received.count("INVITE") >= 1 and len(bob.calls) == 1
        bob.calls[0].hangup()                         # BYE from the callee, back through the proxy
        wait_for(lambda: call.state == VoIP.CallState.ENDED, what="the caller's side ended by BYE")
        wait_for(lambda: "200" in bob.received, what="the 200 for the BYE at the callee")
    finally:
        alice.stop()
        bob.stop()


def test_a_spoofed_from_on_another_source_is_still_challenged(srv):
    alice = Phone(srv, "alice")
    try:
        u = UA(srv.sip_port, "alice", None, domain="127.0.0.1")    # a different UDP port, no password
        u.send(u.request("INVITE", "sip:bob@127.0.0.1", extra=[("Contact", f"<{u.contact}>")]))
        r = u.next_message()
        while r.status < 200:
            r = u.next_message()
        assert r.status == 407 and r.headers.get("Proxy-Authenticate")
        u.close()
    finally:
        alice.stop()


def test_pyvoip_calls_into_a_channel_and_leaves_it_on_hang_up(srv):
    irc = RawClient(srv.irc_port).register("watcher")
    irc.send("JOIN #room")
    irc.read_until(" 366 ")
    carol = Phone(srv, "carol", server="localhost")    # so it calls sip:room@localhost: the conference
    try:
        call = carol.phone.call("room")
        irc.read_until(lambda l: l.startswith(":carol!") and "JOIN" in l and "#room" in l)
        wait_for(lambda: call.state == VoIP.CallState.ANSWERED, what="the conference's 200")
        call.hangup()
        irc.read_until(lambda l: l.startswith(":carol!") and "PART #room" in l)
    finally:
        carol.stop()
        irc.close()
