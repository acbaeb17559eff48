"""XEP-0160 offline messages: kept for an account with no resource anywhere, delivered at its next
initial presence with an XEP-0203 delay.

A chat or normal message with a body to a registered account that has no resource on any server
of the tree is stored by the server where it arrived, up to `xmpp.offline_max` per account
(beyond that the sender gets `service-unavailable`). The messages are kept in memory and in the
`xmpp_offline` store (written as `Op`s, read once at start). At the account's first available
presence of a session (priority not negative) the server delivers what it holds, and **carries
the rest to where the account comes online**: it sends `XMPP_OFFLINE_PULL {account, server}` to
every server, and each that holds messages for that account sends them in one
`XMPP_OFFLINE_PUSH {account, messages: [[stamp, stanza], ...]}` to that server only and forgets
them (the frames are numbered, so a short split replays them). The cap holds per server.

Schema (store `xmpp_offline`, version 1):

    xmpp_offline(server, account, seq, stamp, stanza; PK (server, seq))
        stanza: the message as XML (jabber:client), stamp: when it was stored (UNIX time)
"""

from __future__ import annotations

import time

from lxml import etree

from relay.core.storage import Op, Schema

from . import namespaces as ns
from .routing import Delivering, StanzaReceived

# What the store loads when it opens (Schema.loads: each ? is the server's id).
_LOAD = "SELECT account, seq, stamp, stanza FROM xmpp_offline WHERE server = ? ORDER BY seq"

SCHEMA = Schema("xmpp_offline", ("""
CREATE TABLE xmpp_offline (
    server TEXT NOT NULL,
    account TEXT NOT NULL,
    seq {int} NOT NULL,
    stamp {real} NOT NULL,
    stanza TEXT NOT NULL,
    PRIMARY KEY (server, seq)
);
CREATE INDEX xmpp_offline_account ON xmpp_offline(server, account);
""",), tables=("xmpp_offline",), loads=(_LOAD,))

PULL, PUSH = "XMPP_OFFLINE_PULL", "XMPP_OFFLINE_PUSH"
DELAY = "urn:xmpp:delay"
_PRIORITY = "{%s}priority" % ns.CLIENT
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True,
                          remove_pis=True)


def stamp_text(t: float) -> str:
    """XEP-0082 date-time in UTC."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % int((t % 1) * 1000)


def delayed(el: etree._Element, when: float, by: str) -> etree._Element:
    etree.SubElement(el, "{%s}delay" % DELAY, nsmap={None: DELAY}, stamp=stamp_text(when)).set("from", by)
    return el


class OfflineStore:
    def __init__(self, svc, module):
        self.svc, self.core = svc, svc.core
        self.max = svc.opts.offline_max
        self.storage = self.core.storage
        self.server = self.storage.server_id
        self.storage.open_store(SCHEMA)
        self.messages: dict[str, list[tuple[int, float, str]]] = {}    # account -> (seq, stamp, stanza)
        self.seq = 0
        for account, seq, stamp, stanza in self.storage.load(_LOAD):
            self.messages.setdefault(account, []).append((seq, stamp, stanza))
            self.seq = max(self.seq, seq)
        self.stored = self.delivered = self.refused = 0

    # ---------------------------------------------------------------- in
    def store(self, account: str, el: etree._Element, now: float) -> bool:
        """Keep `el` for `account`; False past the cap (or for no such account)."""
        if self.core.accounts.get(account) is None:
            return False
        kept = self.messages.setdefault(account, [])
        if len(kept) >= self.max:
            self.refused += 1
            return False
        self.seq += 1
        text = etree.tostring(el, encoding="unicode")
        kept.append((self.seq, now, text))
        self.storage.queue.put(Op("INSERT INTO xmpp_offline(server, account, seq, stamp, stanza) VALUES (?,?,?,?,?)",
                                  (self.server, account, self.seq, now, text)))
        self.stored += 1
        return True

    def take(self, account: str) -> list[tuple[int, float, str]]:
        kept = self.messages.pop(account, None)
        if kept:
            self.storage.queue.put(Op("DELETE FROM xmpp_offline WHERE server = ? AND account = ?",
                                      (self.server, account)))
        return kept or []

    def on_offline(self, ev: StanzaReceived):
        return True if ev.to.local is not None and self.store(ev.to.local, ev.stanza, ev.now) else None

    # ---------------------------------------------------------------- out
    def on_initial_presence(self, ev: StanzaReceived):
        """<presence/> (the session's first available one): what is kept here, then ask the tree."""
        s, el = ev.session, ev.stanza
        if el.get("type") is not None or s.interested:
            return None
        try:
            if int(el.findtext(_PRIORITY) or 0) < 0:
                return None                 # RFC 6121 §8.5.2: not for a negative priority
        except ValueError:
            pass
        for _, when, text in self.take(s.account):
            self.deliver(s, text, when, ev.now)
        if self.core.links.peers:
            self.core.net.router.send_extension(PULL, {"account": s.account, "server": self.server})
        return None

    def deliver(self, s, text: str, when: float, now: float) -> None:
        try:
            el = etree.fromstring(text, _PARSER)
        except etree.XMLSyntaxError:
            return
        delayed(el, when, self.svc.domain)
        el.set("to", str(s.jid))
        r = self.svc.router
        if not r.hooks.has("message/delivering") or \
                r.hooks.run("message/delivering", Delivering(r, s.jid.bare, el, [s], now)) is None:
            s.send(el)
        self.delivered += 1

    # ---------------------------------------------------------------- across the tree
    def on_frame(self, ftype: str, origin: str, payload: dict, from_link=None):
        if ftype == PULL:
            account, server = payload.get("account"), payload.get("server")
            if isinstance(account, str) and isinstance(server, str) and server != self.server:
                kept = self.take(account)
                if kept:
                    self.core.net.router.send_extension(
                        PUSH, {"account": account, "messages": [[when, text] for _, when, text in kept]}, {server})
            return True
        if ftype == PUSH:
            account, messages = payload.get("account"), payload.get("messages")
            if isinstance(account, str) and isinstance(messages, list):
                self.pushed(account, messages)
            return True
        return None

    def pushed(self, account: str, messages: list) -> None:
        """Messages another server kept for `account`: to its available resources here, else kept here."""
        now = self.core.now()
        acct = self.svc.accounts.get(next((b for b in self.svc.accounts if b.local == account), None))
        sessions = [x for x in acct.resources.values() if x.interested and x.priority >= 0] if acct else []
        for m in messages:
            if not (isinstance(m, list) and len(m) == 2 and isinstance(m[0], (int, float)) and isinstance(m[1], str)):
                continue
            if sessions:
                self.deliver(sessions[0], m[1], float(m[0]), now)
                continue
            try:
                self.store(account, etree.fromstring(m[1], _PARSER), float(m[0]))
            except etree.XMLSyntaxError:
                pass

    def stats(self) -> dict:
        return {"offline_kept": sum(len(v) for v in self.messages.values()), "offline_stored": self.stored,
                "offline_delivered": self.delivered, "offline_refused": self.refused}


def setup(module, svc) -> None:
    store = svc.offline = OfflineStore(svc, module)
    module.hook("message/offline", store.on_offline)
    module.hook("presence/initial", store.on_initial_presence)
    module.hook("link_extension", store.on_frame)
    module.add_item("xmpp-feature", "msgoffline")
