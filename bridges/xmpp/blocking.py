"""XEP-0191 blocking command: an account's blocklist, the same on every server of the tree.

`<iq type='get'><blocklist xmlns='urn:xmpp:blocking'/></iq>` lists it; `block` adds items,
`unblock` removes them (no item: all), and each change is pushed to the account's resources that
asked for the list, on every server. A blocked item is a JID as XEP-0191 §3 matches it: a full
JID, a bare JID, a domain or `domain/resource`.
- From a blocked JID to the account: messages and presence are dropped, an iq get/set is answered
  `service-unavailable` (the router's last out filter, so it holds on every path to a session).
- From the account to a blocked JID: a message or iq is refused with `not-acceptable` and
  `<blocked xmlns='urn:xmpp:blocking:errors'/>`; presence is not sent (directed or broadcast).

Network-wide as rosters are (roster.py, federation.py): every entry is stamped `(time, server id)`
when it changes and the newer stamp wins; an unblocked JID stays as a tombstone so that it wins
over an older copy at a netjoin. Kept in memory (read once at start), each change one write.

Frames (module frames in ENCAP: numbered, replayed after a short split, deduplicated):

    XMPP_BLOCK {account, jid, blocked: bool, stamp: [time, server]}
        one change, to every server.
    XMPP_BLOCK_VERSIONS {versions: {account: version}}
        on link-up, to the peer: a digest of each blocklist this server has.
    XMPP_BLOCKS {entries: [[account, jid, blocked, stamp], ...]}
        the answer: every entry and tombstone of the lists whose versions differ. The receiver keeps
        what is newer and passes on, as XMPP_BLOCK frames, what it took.

Schema (store `xmpp_blocklist`, version 2; version 1 kept one list per server, merged into one,
and a version 1 dump restores so merged):

    xmpp_blocklist(account, jid, removed, stamp, stamp_server; PK (account, jid))
"""

from __future__ import annotations

import hashlib
import secrets

from lxml import etree

from relay.core.hooks import Stop
from relay.core.storage import Op, Schema

from . import namespaces as ns
from .jid import Jid, JidError, parse_jid
from .roster import clean_stamp
from .routing import StanzaReceived
from .stanza import element

BLOCKING = "urn:xmpp:blocking"
ERRORS = "urn:xmpp:blocking:errors"
_B = "{%s}" % BLOCKING
_C = "{%s}" % ns.CLIENT
_IQ, _PRESENCE = _C + "iq", _C + "presence"

CHANGE, VERSIONS, ENTRIES = "XMPP_BLOCK", "XMPP_BLOCK_VERSIONS", "XMPP_BLOCKS"
FRAMES = (CHANGE, VERSIONS, ENTRIES)
CHUNK = 500                         # entries per XMPP_BLOCKS frame

# What the store loads when it opens (Schema.loads: each ? is the server's id).
_LOAD = "SELECT account, jid, removed, stamp, stamp_server FROM xmpp_blocklist"

SCHEMA = Schema("xmpp_blocklist", ("""
CREATE TABLE xmpp_blocklist (
    server TEXT NOT NULL,
    account TEXT NOT NULL,
    jid TEXT NOT NULL,
    PRIMARY KEY (server, account, jid)
);
""", """
CREATE TABLE xmpp_blocklist_v2 (
    account TEXT NOT NULL,
    jid TEXT NOT NULL,
    removed INTEGER NOT NULL DEFAULT 0,
    stamp {real} NOT NULL,
    stamp_server TEXT NOT NULL,
    PRIMARY KEY (account, jid)
);
INSERT INTO xmpp_blocklist_v2 (account, jid, removed, stamp, stamp_server)
    SELECT account, jid, 0, 0, MIN(server) FROM xmpp_blocklist GROUP BY account, jid;
DROP TABLE xmpp_blocklist;
ALTER TABLE xmpp_blocklist_v2 RENAME TO xmpp_blocklist;
"""), tables=("xmpp_blocklist",), loads=(_LOAD,), dumps_from=1, convert=lambda v, tables: _from_v1(tables))


def _from_v1(tables: dict) -> dict:
    """A version 1 dump (one list per server) as version 2 rows: what the migration does, the lists
    merged into one, each entry unstamped (time 0) by the first server that had it."""
    cols, rows = tables.get("xmpp_blocklist", (["server", "account", "jid"], []))
    at = {c: i for i, c in enumerate(cols)}
    first: dict[tuple[str, str], str] = {}
    for r in rows:
        key, sid = (r[at["account"]], r[at["jid"]]), r[at["server"]]
        if key not in first or sid < first[key]:
            first[key] = sid
    return {"xmpp_blocklist": (["account", "jid", "removed", "stamp", "stamp_server"],
                               [[a, j, 0, 0.0, sid] for (a, j), sid in first.items()])}

# The newer stamp wins in the database too: several servers may write one shared database.
_PUT = ("INSERT INTO xmpp_blocklist(account, jid, removed, stamp, stamp_server) VALUES (?,?,?,?,?) "
        "ON CONFLICT(account, jid) DO UPDATE SET removed = excluded.removed, stamp = excluded.stamp, "
        "stamp_server = excluded.stamp_server WHERE excluded.stamp > xmpp_blocklist.stamp OR "
        "(excluded.stamp = xmpp_blocklist.stamp AND excluded.stamp_server > xmpp_blocklist.stamp_server)")


def candidates(jid: str) -> tuple[str, ...]:
    """What in a blocklist would match a stamped JID (XEP-0191 §3, as privacy lists match)."""
    bare, _, resource = jid.partition("/")
    domain = bare.rpartition("@")[2]
    if resource:
        return jid, bare, domain, f"{domain}/{resource}"
    return bare, domain


def _digest(jid: str) -> int:
    return int.from_bytes(hashlib.sha1(jid.encode()).digest()[:8], "big")


class Blocklists:
    def __init__(self, svc):
        self.svc, self.core = svc, svc.core
        self.storage = self.core.storage
        self.server = self.storage.server_id
        self.storage.open_store(SCHEMA)
        self.lists: dict[str, set[str]] = {}                # account -> blocked JIDs
        self.stamps: dict[tuple[str, str], tuple] = {}       # (account, jid) -> stamp, tombstones too
        self.removed: dict[str, set[str]] = {}               # account -> unblocked JIDs (tombstones)
        self.digests: dict[str, int] = {}
        for account, jid, removed, t, sid in self.storage.load(_LOAD):
            self._set(account, jid, not removed, (float(t), sid))
        self.dropped = 0
        self.passing = None                 # the error we are sending about a blocked JID
        self.stats = {"block_in": 0}

    @property
    def links(self):
        return getattr(self.core.net, "router", None)

    # ---------------------------------------------------------------- the stamped entries
    def version(self, account: str) -> str:
        return format(self.digests.get(account, 0), "x")

    def entries(self, account: str) -> list[list]:
        return [[account, j, j in self.lists.get(account, ()), list(self.stamps[(account, j)])]
                for j in sorted(self.lists.get(account, set()) | self.removed.get(account, set()))]

    def _set(self, account: str, jid: str, blocked: bool, stamp: tuple) -> None:
        items, gone = self.lists.setdefault(account, set()), self.removed.setdefault(account, set())
        was = jid in items
        if blocked and not was:
            items.add(jid)
            gone.discard(jid)
            self.digests[account] = self.digests.get(account, 0) ^ _digest(jid)
        elif not blocked:
            if was:
                items.discard(jid)
                self.digests[account] ^= _digest(jid)
            gone.add(jid)
        for d in (self.lists, self.removed):
            if not d[account]:
                del d[account]
        self.stamps[(account, jid)] = stamp

    def _local(self, account: str, jid: str, blocked: bool, now: float) -> Op:
        """A change made here: it wins over what it replaces whatever the clocks say, and is told
        to every server. Returns its write."""
        old = self.stamps.get((account, jid))
        stamp = (now if old is None or now > old[0] else old[0] + 0.001, self.server)
        self._set(account, jid, blocked, stamp)
        links = self.links
        if links is not None and links.peers:
            links.send_extension(CHANGE, {"account": account, "jid": jid, "blocked": blocked, "stamp": list(stamp)})
        return Op(_PUT, (account, jid, 0 if blocked else 1, *stamp))

    def apply(self, account: str, jid: str, blocked: bool, stamp: tuple) -> bool:
        """Another server's entry: taken (stored, pushed to the account's resources here) if newer."""
        old = self.stamps.get((account, jid))
        if old is not None and stamp <= old:
            return False
        was = jid in self.lists.get(account, ())
        self._set(account, jid, blocked, stamp)
        self.storage.queue.put(Op(_PUT, (account, jid, 0 if blocked else 1, *stamp)))
        self.stats["block_in"] += 1
        if was != blocked and self.svc.router is not None:
            self.push(account, "block" if blocked else "unblock", [jid])
        return True

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
        items = self.lists.get(s.account, set())
        if op == "block":
            if not jids:
                r.error(s, iq, "modify", "bad-request")
                return True
            changed = [j for j in dict.fromkeys(jids) if j not in items]
        else:
            changed = [j for j in dict.fromkeys(jids) if j in items] if jids else sorted(items)
        ops = [self._local(s.account, j, op == "block", ev.now) for j in changed]
        if ops:
            self.storage.queue.put(*ops)
        r.result(s, iq)
        self.push(s.account, op, jids)
        return True

    def push(self, account: str, op: str, jids) -> None:
        """A block or unblock push to the account's resources here that asked for the list."""
        r = self.svc.router
        for x in r.sessions_of(Jid(account, self.svc.domain)):
            if x.blocklist_requested:
                push = element("iq", {"type": "set", "id": "push-" + secrets.token_hex(4)})
                push.append(self.element(op, jids))
                r.to_full(x, push)

    # ---------------------------------------------------------------- across the tree
    def link_up(self, peer_id: str, *rest) -> None:
        links = self.links
        if links is not None:
            links.send_extension(VERSIONS, {"versions": {a: self.version(a) for a in self.accounts()}}, {peer_id})
        return None

    def accounts(self) -> set[str]:
        return set(self.lists) | set(self.removed)

    def on_frame(self, ftype: str, origin: str, payload, from_link: str | None):
        if ftype not in FRAMES:
            return None
        if not isinstance(payload, dict):
            return True
        links = self.links
        if ftype == CHANGE:
            self._take([payload.get("account"), payload.get("jid"), payload.get("blocked"), payload.get("stamp")])
        elif ftype == VERSIONS:
            theirs = payload.get("versions")
            if isinstance(theirs, dict) and links is not None:
                entries = []
                for account in self.accounts() | {a for a in theirs if isinstance(a, str)}:
                    if self.version(account) != theirs.get(account, "0"):
                        entries += self.entries(account)
                for i in range(0, len(entries), CHUNK):
                    links.send_extension(ENTRIES, {"entries": entries[i:i + CHUNK]}, {origin})
        elif ftype == ENTRIES:
            entries = payload.get("entries")
            for e in entries if isinstance(entries, list) else ():
                if self._take(e) and links is not None:
                    links.send_extension(CHANGE, {"account": e[0], "jid": e[1], "blocked": e[2], "stamp": e[3]},
                                         None, from_link)
        return True

    def _take(self, entry) -> bool:
        if not isinstance(entry, (list, tuple)) or len(entry) != 4:
            return False
        account, jid, blocked, stamp = entry
        stamp = clean_stamp(stamp)
        if not isinstance(account, str) or not account or not isinstance(jid, str) or not isinstance(blocked, bool) \
                or stamp is None:
            return False
        try:
            jid = str(parse_jid(jid))
            parse_jid(f"{account}@{self.svc.domain}")
        except JidError:
            return False
        return self.apply(account, jid, blocked, stamp)

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
    module.hook("link_extension", lists.on_frame)
    module.hook("link_up", lists.link_up)
