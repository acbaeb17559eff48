"""Microbenchmark of PEP notification (not a test): the cost of one publish's `+notify` walk.

    .venv/bin/python -m tools.bench.pep_notify [--accounts 2000] [--contacts 10] [--publishes 2000]

One in-memory core (no sockets): `--accounts` accounts online, one resource each, with caps that
want another node (avatars); the publisher's `--contacts` contacts want its tune (`+notify`) and
are in its roster. Measured: CPU time (time.process_time) per tune publish, through the pubsub
service's notification (who gets it, and the deliveries to the contacts' in-memory streams).
Before the `+notify` index this walked every account online; with it, the contacts only.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import tempfile
import time

from bridges.xmpp.pubsub.nodes import Item
from relay.core.config import parse
from relay.core.server import Core

HEADER = (b"<?xml version='1.0'?><stream:stream to='localhost' xmlns:stream='http://etherx.jabber.org/streams' "
          b"xmlns='jabber:client' version='1.0'>")
TUNE = "http://jabber.org/protocol/tune"
AVATAR = "urn:xmpp:avatar:metadata"
CAPS_NODE = "http://example.org/bench"


class Transport:
    def __init__(self):
        self.peer_host, self.peer_port, self.tls, self.proto = "127.0.0.1", 0, True, "xmpp"
        self.closing, self.backlog, self.n = False, 0, 0

    def write(self, data: bytes) -> None:
        self.n += 1

    def close(self, reason: str = "") -> None:
        self.closing = True

    abort = close

    def channel_bindings(self) -> dict:
        return {}

    def start_tls(self, on_done) -> None:
        on_done(False, "not here")


def ver_of(features: list[str]) -> str:
    s = "client/pc//bench<" + "".join(f + "<" for f in sorted(features))
    return base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()


def caps_answer(features: list[str]) -> bytes:
    feats = "".join(f"<feature var='{f}'/>" for f in features)
    return (f"<iq type='result' id='ID' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info' "
            f"node='{CAPS_NODE}#{ver_of(features)}'><identity category='client' type='pc' name='bench'/>{feats}"
            "</query></iq>").encode()


def online(core: Core, account: str, features: list[str], now: float):
    t = Transport()
    s = core.services["xmpp"].new_session(t, None, now)
    plain = base64.b64encode(f"\0{account}\0secret".encode()).decode()
    for data in (HEADER, f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>".encode(),
                 HEADER, b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
                 f"<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{CAPS_NODE}' "
                 f"ver='{ver_of(features)}'/></presence>".encode()):
        s.data_received(data, now)
    caps = core.modules.loaded["pubsub"].state["caps"]
    for iq_id, (jid, _, _) in list(caps.asked.items()):     # answer the server's disco#info ask
        if jid == str(s.jid):
            s.data_received(caps_answer(features).replace(b"'ID'", f"'{iq_id}'".encode()), now)
    return t


def run(accounts: int, contacts: int, publishes: int) -> float:
    now = 1_000_000.0
    with tempfile.TemporaryDirectory() as d:
        cfg = parse({"server": {"id": "001", "name": "a.test"}, "data_dir": d, "shapers": {}, "shaper_rules": [],
                     "modules": {"xmpp": {"roster_file": ""}, "pubsub": {"persist": False}}})
        core = Core(cfg, now)
        core.start(now)
        roster = core.services["xmpp"].roster
        core.register_account("alice", "secret", now)
        for i in range(accounts):
            name = f"user{i}"
            core.register_account(name, "secret", now)
            if i < contacts:
                roster.put("alice", f"{name}@localhost", now, subscription="both")
                roster.put(name, "alice@localhost", now, subscription="both")
        online(core, "alice", [], now)
        streams = [online(core, f"user{i}", [TUNE + "+notify"] if i < contacts else [AVATAR + "+notify"], now)
                   for i in range(accounts)]
        svc = core.services["pubsub"]
        node = svc.create("alice@localhost", TUNE, "alice@localhost", {}, "pep", now)
        start = time.process_time()
        for n in range(publishes):
            svc.publish(node, Item(f"i{n}", b"<tune xmlns='%s'/>" % TUNE.encode(), "alice@localhost", now), now)
        spent = time.process_time() - start
        before = [t.n for t in streams]
        svc.publish(node, Item("check", b"<tune xmlns='%s'/>" % TUNE.encode(), "alice@localhost", now), now)
        got = [t.n - b for t, b in zip(streams, before)]
        assert got == [1] * contacts + [0] * (accounts - contacts), "the events did not go to the contacts only"
        return spent / publishes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=2000)
    ap.add_argument("--contacts", type=int, default=10)
    ap.add_argument("--publishes", type=int, default=2000)
    a = ap.parse_args()
    per = run(a.accounts, a.contacts, a.publishes)
    print(f"{a.accounts} accounts online, {a.contacts} contacts want the node: "
          f"{per * 1e6:,.0f} us CPU per publish ({1 / per:,.0f} publishes/s)")


if __name__ == "__main__":
    main()
