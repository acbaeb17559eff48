"""XEP-0191 blocking command: an account's blocklist, stored and enforced.

`<iq type='get'><blocklist xmlns='urn:xmpp:blocking'/></iq>` lists it; `block` adds items,
`unblock` removes them (no item: all), and each change is pushed to the account's resources that
asked for the list. A blocked item is a JID as XEP-0191 §3 matches it: a full JID, a bare JID, a
domain or `domain/resource`.
- From a blocked JID to the account: messages and presence are dropped, an iq get/set is answered
  `service-unavailable` (the router's last out filter, so it holds on every path to a session).
- From the account to a blocked JID: a message or iq is refused with `not-acceptable` and
  `<blocked xmlns='urn:xmpp:blocking:errors'/>`; presence is not sent (directed or broadcast).

Kept in memory, written to the `xmpp_blocklist` store (read once at start). Per server: an
account that logs in on another server of the tree finds the blocklist it keeps there.

Schema (store `xmpp_blocklist`, version 1):

    xmpp_blocklist(server, account, jid; PK (server, account, jid))
"""

from __future__ import annotations

import secrets

from lxml import etree

from relay.core.hooks import Stop
from relay.core.storage import Op, Schema

from . import namespaces as ns
from .jid import JidError, parse_jid
from .routing import StanzaReceived
from .stanza import element

BLOCKING = "urn:xmpp:blocking"
ERRORS = "urn:xmpp:blocking:errors"
_B = "{%s}" % BLOCKING
_C = "{%s}" % ns.CLIENT
_IQ, _PRESENCE = _C + "iq", _C + "presence"

SCHEMA = Schema("xmpp_blocklist", ("""
CREATE TABLE xmpp_blocklist (
    server TEXT NOT NULL,
    account TEXT NOT NULL,
    jid TEXT NOT NULL,
    PRIMARY KEY (server, account, jid)
);
""",), tables=("xmpp_blocklist",))


def candidates(jid: str) -> tuple[str, ...]:
    """What in a blocklist would match a stamped JID (XEP-0191 §3, as privacy lists match)."""
    bare, _, resource = jid.partition("/")
    domain = bare.rpartition("@")[2]
    if resource:
        return jid, bare, domain, f"{domain}/{resource}"
    return bare, domain


class Blocklists:
    def __init__(self, svc):
        self.svc, self.core = svc, svc.core
        self.storage = self.core.storage
        self.server = self.storage.server_id
        self.storage.open_store(SCHEMA)
        self.lists: dict[str, set[str]] = {}
        for account, jid in self.storage.query("SELECT account, jid FROM xmpp_blocklist WHERE server = ?",
                                               (self.server,)):
            self.lists.setdefault(account, set()).add(jid)
        self.dropped = 0
        self.passing = None                 # the error we are sending about a blocked JID

    def blocks(self, account: str, jid: str) -> bool:
        items = self.lists.get(account)
        return bool(items) and bool(jid) and any(c in items for c in candidates(jid))

    def drops(self, s, el: etree._Element) -> bool:
        """Whether a stanza to session `s` is one its account blocks (or one blocked by its sender)."""
        lists = self.lists
        if not lists:
            return False
        frm = el.get("from")
        if not frm:
            return False
        if s.account in lists:
            own = str(s.jid.bare)
            if frm != self.svc.domain and frm.partition("/")[0] != own and self.blocks(s.account, frm):
                return True
        if el.tag == _PRESENCE and "@" in frm:
            local, _, rest = frm.partition("@")
            if rest.partition("/")[0] == self.svc.domain and local in lists and self.blocks(local, str(s.jid)):
                return True                 # our own account's presence to a JID it blocks
        return False

    # ---------------------------------------------------------------- enforcement
    def out_filter(self, s, el: etree._Element, data: bytes) -> bool:
        if not self.lists or el is self.passing or not self.drops(s, el):
            return False
        self.dropped += 1
        if el.tag == _IQ and el.get("type") in ("get", "set"):
            err = element("iq", {"type": "error", "id": el.get("id"), "from": str(s.jid), "to": el.get("from")})
            e = etree.SubElement(err, _C + "error", type="cancel")
            etree.SubElement(e, "{%s}service-unavailable" % ns.STANZA_ERRORS, nsmap={None: ns.STANZA_ERRORS})
            self.svc.router.deliver(err, self.core.now())
        return True

    def on_send(self, el: etree._Element, s):
        """user_send_packet: what the account sends to a JID it blocks."""
        if s.account not in self.lists:
            return None
        to = el.get("to")
        if not to or to == self.svc.domain or not self.blocks(s.account, to):
            return None                     # the server itself is never blocked
        if el.tag != _PRESENCE and el.get("type") not in ("error", "result"):
            reply = element(etree.QName(el).localname, {"type": "error", "id": el.get("id"), "from": to})
            e = etree.SubElement(reply, _C + "error", type="cancel")
            etree.SubElement(e, "{%s}not-acceptable" % ns.STANZA_ERRORS, nsmap={None: ns.STANZA_ERRORS})
            etree.SubElement(e, "{%s}blocked" % ERRORS, nsmap={None: ERRORS})
            self.passing = reply            # from the blocked JID, yet ours: the out filter lets it by
            try:
                self.svc.router.to_full(s, reply)
            finally:
                self.passing = None
        return Stop(None)

    # ---------------------------------------------------------------- the iqs
    # <iq type='get'><blocklist xmlns='urn:xmpp:blocking'/></iq>
    def get(self, ev: StanzaReceived):
        ev.session.blocklist_requested = True
        ev.router.result(ev.session, ev.stanza, self.element("blocklist", self.lists.get(ev.session.account, ())))
        return True

    # <iq type='set'><block xmlns='urn:xmpp:blocking'><item jid='J'/>...</block></iq>, and <unblock>
    def change(self, ev: StanzaReceived):
        r, s, iq = ev.router, ev.session, ev.stanza
        op = etree.QName(iq[0]).localname
        try:
            jids = [str(parse_jid(i.get("jid") or "")) for i in iq[0].findall(_B + "item")]
        except JidError:
            r.error(s, iq, "modify", "jid-malformed")
            return True
        items = self.lists.setdefault(s.account, set())
        if op == "block":
            if not jids:
                r.error(s, iq, "modify", "bad-request")
                return True
            new = [j for j in jids if j not in items]
            items.update(new)
            ops = [Op("INSERT INTO xmpp_blocklist(server, account, jid) VALUES (?,?,?) ON CONFLICT "
                      "(server, account, jid) DO NOTHING", (self.server, s.account, j)) for j in new]
        else:
            gone = [j for j in jids if j in items] if jids else sorted(items)
            items.difference_update(gone)
            ops = [Op("DELETE FROM xmpp_blocklist WHERE server = ? AND account = ? AND jid = ?",
                      (self.server, s.account, j)) for j in gone]
        if not items:
            del self.lists[s.account]
        if ops:
            self.storage.queue.put(*ops)
        r.result(s, iq)
        for x in r.sessions_of(s.jid.bare):
            if x.blocklist_requested:
                push = element("iq", {"type": "set", "id": "push-" + secrets.token_hex(4)})
                push.append(self.element(op, jids))
                r.to_full(x, push)
        return True

    @staticmethod
    def element(name: str, jids) -> etree._Element:
        el = etree.Element(_B + name, nsmap={None: BLOCKING})
        for j in sorted(jids):
            etree.SubElement(el, _B + "item", jid=j)
        return el


def setup(module, svc) -> None:
    lists = svc.blocking = Blocklists(svc)
    svc.router.out_filters.insert(0, lists.out_filter)       # before CSI holds anything
    module.hook("user_send_packet", lists.on_send)
    module.hook(f"iq-get/self/{BLOCKING}:blocklist", lists.get)
    for op in ("block", "unblock"):
        module.hook(f"iq-set/self/{BLOCKING}:{op}", lists.change)
    module.add_item("xmpp-feature", BLOCKING)
