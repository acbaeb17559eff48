"""In-memory XMPP clients for the IM extension tests (sm, csi, offline, carbons, mam, blocking)."""

from __future__ import annotations

import re

from lxml import etree

from xmpp_ext_support import HEADER, Transport, bind, sasl_plain

SM = "urn:xmpp:sm:3"


class Client:
    """Logs in with PLAIN; binds `resource` unless it is None (then it may `<resume/>` instead)."""

    def __init__(self, wire, core: str, account: str, resource: str | None = "r"):
        self.wire, self.core = wire, wire.cores[core]
        self.t = Transport()
        self.s = self.core.services["xmpp"].new_session(self.t, None, wire.now)
        self.feed(HEADER)
        sasl_plain(self, account)
        self.features = self.take()
        self.jid = None
        if resource is not None:
            self.bind(resource)

    def bind(self, resource: str) -> None:
        self.jid = bind(self, resource)

    def feed(self, data) -> None:
        self.s.data_received(data.encode() if isinstance(data, str) else data, self.wire.now)
        self.wire.pump()

    def take(self) -> bytes:
        data = b"".join(self.t.out)
        self.t.out.clear()
        return data

    def stanzas(self) -> list[etree._Element]:
        """What it got since the last take, parsed (in the stream's default namespace)."""
        data = self.take()
        root = etree.fromstring(b"<s xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
                                + data + b"</s>")
        return list(root)

    def cut(self) -> None:
        """The TCP connection is gone (no stream close)."""
        self.t.closing = True
        self.s.connection_lost("Connection reset by peer", self.wire.now)
        self.wire.pump()

    def enable_sm(self, resume: bool = True) -> str | None:
        self.feed(f"<enable xmlns='{SM}'" + (" resume='true'" if resume else "") + "/>")
        out = self.take()
        assert b"<enabled" in out, out
        m = re.search(rb'<enabled [^>]*id="([^"]+)"', out)
        return m.group(1).decode() if m else None

    def chat(self, to: str, body: str, **attrs) -> None:
        extra = "".join(f" {k}='{v}'" for k, v in attrs.items())
        self.feed(f"<message type='chat' to='{to}'{extra}><body>{body}</body></message>")


def stored_wire(tmp_path, modules: dict, accounts=("alice", "bob")):
    """A one-server Wire whose core has a SQLite database; its reads come after the queued writes are
    committed, as the runtime's reader does."""
    from relay.core.config import parse
    from relay.core.server import Core
    from relay.core.storage import Storage
    from relay.storage.sqlite import SqliteDatabase
    from support_net import Wire

    w = Wire(tmp_path, [])
    (tmp_path / "a").mkdir(exist_ok=True)
    db = SqliteDatabase(str(tmp_path / "a" / "relay.db"))
    storage = Storage(db)

    def flush():
        q = storage.queue
        units = q.take(100_000)
        db.execute([op for u in units for op in u.ops])
        q.done(len(units))

    def reader(sql, args, done):
        flush()
        done(db.query(sql, args))

    storage.reader = reader
    cfg = parse({"server": {"id": "001", "name": "a.test"}, "data_dir": str(tmp_path / "a"), "links": [],
                 "shapers": {}, "shaper_rules": [], "modules": modules})
    core = Core(cfg, w.now, storage)
    core.start(w.now)
    w.cores["a"] = core
    w.flush = flush
    for name in accounts:
        core.register_account(name, "secret", w.now)
    return w
