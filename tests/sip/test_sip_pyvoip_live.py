"""pyVoIP as a real user agent: it registers with digest, but only in RFC 2069's form (no qop, no
nonce-count) and with a digest uri of `sip:<server>;transport=UDP`, so the server accepts it only with
`allow_digest_without_qop: true` (off by default). A call with pyVoIP through the proxy is not tested:
its INVITE waits for a 401 and never answers a proxy's 407 (pyVoIP 1.6.8)."""

from __future__ import annotations

import pytest
from support import Server, free_port, server_config, wait_for

VoIP = pytest.importorskip("pyVoIP.VoIP")


@pytest.fixture
def srv(tmp_path):
    sip = free_port()
    cfg = server_config(listen=[{"proto": "irc", "host": "127.0.0.1", "port": free_port()},
                                {"proto": "sip", "host": "127.0.0.1", "port": sip, "transport": "udp"}],
                        modules={"sip": {"allow_digest_without_qop": True, "algorithms": ["MD5"]}})
    s = Server(tmp_path / "pyvoip", cfg).start()
    s.sip_port = sip
    s.ctl("register", "alice", "alice-pw")
    yield s
    s.stop()
    assert "Traceback" not in s.log(), s.log()[-3000:]


def test_pyvoip_registers_and_unregisters(srv):
    low = free_port()
    phone = VoIP.VoIPPhone("127.0.0.1", srv.sip_port, "alice", "alice-pw", myIP="127.0.0.1",
                           sipPort=free_port(), rtpPortLow=low, rtpPortHigh=low + 10)
    phone.start()
    try:
        assert phone.get_status() == VoIP.PhoneStatus.REGISTERED
        [binding] = srv.call("sip", "bindings")
        assert binding["account"] == "alice" and binding["contact"].startswith("sip:alice@127.0.0.1:")
    finally:
        phone.stop()                                  # un-REGISTER (Expires: 0)
    wait_for(lambda: srv.call("sip", "bindings") == [], what="pyVoIP's binding removed")
