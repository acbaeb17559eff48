"""SIP_BIND across linked in-memory cores (a -- b -- c, time passed in): a binding made on one server
is known on every server, bursts to a server that links later, follows a refresh and an un-REGISTER,
and is forgotten once its server has split off for good."""

from __future__ import annotations

from sipcore import Endpoint, Listener, Peer
from support_net import Wire

from bridges.sip.transport import UdpFlow


def sip_on(core):
    ep = Endpoint()
    flow = UdpFlow(core.services["sip"], ep, Listener(), core.now())
    return core, flow, ep


def remote(core, aor):
    return core.services["sip"].store.remote_get(aor, core.now())


def test_bindings_are_known_network_wide_and_forgotten_with_their_server(tmp_path):
    w = Wire(tmp_path, ["a", "b", "c"], modules={"sip": {"persist": False}})
    a = w.cores["a"]
    a.register_account("alice", "alice-pw", w.now)
    w.link("a", "b")
    env = sip_on(a)
    alice = Peer(env, "alice", ("127.0.0.1", 7001))
    assert alice.register(600, now=w.now).status == 200
    w.pump()
    assert [b.contact for b in remote(w.cores["b"], "alice")["001"]] == ["sip:alice@127.0.0.1:7001"]
    w.link("b", "c")                           # c links later: b bursts what it learned
    assert "001" in remote(w.cores["c"], "alice")
    assert remote(a, "alice") == {}            # a's own bindings are local, not remote
    assert alice.register(0, now=w.now).status == 200
    w.pump()
    assert remote(w.cores["c"], "alice") == {}
    assert alice.register(600, now=w.now).status == 200
    w.pump()
    assert "001" in remote(w.cores["c"], "alice")
    w.unlink("b", "a")
    assert "001" in remote(w.cores["c"], "alice")     # held through the split window
    for _ in range(40):
        w.tick(5)
    assert remote(w.cores["c"], "alice") == {} and remote(w.cores["b"], "alice") == {}
