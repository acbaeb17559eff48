"""XEP-0049 private XML storage: an account keeps XML fragments by namespace (bookmarks, client
settings), got and set on its own bare JID.

A fragment in jabber:client, jabber:iq:private itself or no namespace is not-acceptable (§3, §4);
one over `xmpp.private_max_bytes`, or more than `xmpp.private_max_items` namespaces per account,
is not-acceptable too. Stored in the `xmpp_private` store: written through the queue, read with
`storage.read` on a cache miss (without a database the cache is all there is). The same on every
server: a change goes over the tree (`XMPP_PRIVATE`, the newer wins) and each link-up exchanges an
index (`XMPP_PRIVATE_INDEX`), as vcard.py does.

    xmpp_private(account (case-folded), namespace, xml, updated; PK (account, namespace))
"""

from __future__ import annotations

from collections import OrderedDict

from lxml import etree

from relay.core.storage import Op, Schema

from . import namespaces as ns
from .stanza import element

PRIVATE = "jabber:iq:private"
_REFUSED = frozenset({ns.CLIENT, PRIVATE, None, ""})
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
CACHE = 1024

# What the store loads when it opens (Schema.loads: each ? is the server's id).
_LOAD_COUNTS = "SELECT account, COUNT(*) FROM xmpp_private GROUP BY account"
_LOAD_KNOWN = "SELECT account, namespace, updated FROM xmpp_private"

SCHEMA = Schema("xmpp_private", ("""
CREATE TABLE xmpp_private (
    account TEXT NOT NULL,
    namespace TEXT NOT NULL,
    xml TEXT NOT NULL,
    updated {real} NOT NULL,
    PRIMARY KEY (account, namespace)
);
""",), tables=("xmpp_private",), loads=(_LOAD_COUNTS, _LOAD_KNOWN))

_PUT = ("INSERT INTO xmpp_private(account, namespace, xml, updated) VALUES (?,?,?,?) "
        "ON CONFLICT(account, namespace) DO UPDATE SET xml = excluded.xml, updated = excluded.updated")
FRAME, INDEX = "XMPP_PRIVATE", "XMPP_PRIVATE_INDEX"


class PrivateStore:
    def __init__(self, storage):
        self.storage = storage
        self.cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self.counts: dict[str, int] = {}       # account -> namespaces stored (the per-account bound)
        self.known: dict[tuple[str, str], float] = {}  # (account, namespace) stored -> when it was set
        self.bounded = storage.db is not None

    def load(self) -> None:
        self.storage.open_store(SCHEMA)
        self.counts = {k: n for k, n in self.storage.load(_LOAD_COUNTS)}
        self.known = {(k, n): t for k, n, t in self.storage.load(_LOAD_KNOWN)}

    def get(self, account: str, namespace: str, done) -> None:
        key = (account.lower(), namespace)
        if key not in self.known:
            done(None)
            return
        data = self.cache.get(key)
        if data is not None:
            self.cache.move_to_end(key)
            done(data)
            return

        def read(rows):
            data = rows[0][0].encode("utf-8") if rows else None
            if data is not None:
                self._cache(key, data)
            done(data)
        self.storage.read("SELECT xml FROM xmpp_private WHERE account = ? AND namespace = ?", key, read)

    def put(self, account: str, namespace: str, data: bytes, now: float) -> None:
        key = (account.lower(), namespace)
        if key not in self.known:
            self.counts[key[0]] = self.counts.get(key[0], 0) + 1
        self.known[key] = now
        self._cache(key, data)
        self.storage.queue.put(Op(_PUT, (*key, data.decode("utf-8"), now)))

    def remove_account(self, account: str) -> None:
        k = account.lower()
        if self.counts.pop(k, None):
            self.known = {x: t for x, t in self.known.items() if x[0] != k}
            for key in [x for x in self.cache if x[0] == k]:
                del self.cache[key]
            self.storage.queue.write("DELETE FROM xmpp_private WHERE account = ?", (k,))

    def _cache(self, key, data: bytes) -> None:
        self.cache[key] = data
        self.cache.move_to_end(key)
        while self.bounded and len(self.cache) > CACHE:
            self.cache.popitem(last=False)


def _namespace(el: etree._Element) -> str | None:
    return etree.QName(el).namespace if isinstance(el.tag, str) else None


def install(module, svc) -> None:
    store = PrivateStore(module.core.storage)
    store.load()
    svc.private = store
    r = svc.router
    opts = svc.opts

    # <iq type='get'><query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'/></query></iq>
    def get(ev):
        s, iq = ev.session, ev.stanza
        children = list(iq[0])
        if len(children) != 1 or _namespace(children[0]) in _REFUSED:
            r.error(s, iq, "modify", "not-acceptable")
            return True
        asked = children[0]

        def done(data):
            q = etree.Element("{%s}query" % PRIVATE, nsmap={None: PRIVATE})
            if data:
                q.append(etree.fromstring(data, _PARSER))
            else:                                  # nothing stored: the empty element, as asked (§3.2)
                q.append(etree.Element(asked.tag, nsmap={None: _namespace(asked)}))
            reply = element("iq", {"type": "result", "id": iq.get("id")})
            reply.append(q)
            r.to_full(s, reply)
        store.get(s.account, _namespace(asked), done)
        return True

    # <iq type='set'><query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'>...</exodus></query></iq>
    def put(ev):
        s, iq = ev.session, ev.stanza
        children = list(iq[0])
        if not children or any(_namespace(c) in _REFUSED for c in children):
            r.error(s, iq, "modify", "not-acceptable")
            return True
        datas = []
        for c in children:
            c.tail = None
            datas.append((_namespace(c), etree.tostring(c, encoding="utf-8")))
        new = {n for n, _ in datas if (s.account.lower(), n) not in store.known}
        if (any(len(d) > opts.private_max_bytes for _, d in datas)
                or store.counts.get(s.account.lower(), 0) + len(new) > opts.private_max_items):
            r.error(s, iq, "modify", "not-acceptable")
            return True
        for n, d in datas:
            store.put(s.account, n, d, ev.now)
            send(s.account.lower(), n, d, ev.now, None)
        r.result(s, iq)
        return True

    def send(account: str, namespace: str, data: bytes, updated: float, servers) -> None:
        router = module.core.net.router
        if router is not None:
            router.send_extension(FRAME, {"account": account, "namespace": namespace,
                                          "xml": data.decode("utf-8"), "updated": updated}, servers)

    def link_up(peer_id, *rest):
        router = module.core.net.router
        if router is not None:
            router.send_extension(INDEX, {"index": [[a, n, t] for (a, n), t in store.known.items()]}, None)

    def extension(ftype, origin, payload, from_link=None):
        if ftype == FRAME:
            received(payload)
            return True
        if ftype == INDEX:
            try:
                theirs = {(a, n): float(t) for a, n, t in payload["index"]}
            except (KeyError, TypeError, ValueError):
                return True
            for key, t in list(store.known.items()):
                if t > theirs.get(key, -1.0):
                    store.get(*key, lambda data, key=key, t=t: data and send(*key, data, t, {origin}))
            return True
        return None

    def received(p) -> None:
        """A fragment set on another server: kept if it is newer than ours (and is one)."""
        try:
            account, namespace, data, updated = p["account"], p["namespace"], p["xml"].encode("utf-8"), \
                float(p["updated"])
            el = etree.fromstring(data, _PARSER) if len(data) <= 2 * opts.private_max_bytes else None
        except (KeyError, TypeError, ValueError, AttributeError, etree.XMLSyntaxError):
            return
        if el is None or _namespace(el) != namespace or namespace in _REFUSED or not isinstance(account, str) \
                or account != account.lower() or module.core.accounts.get(account) is None \
                or updated <= store.known.get((account, namespace), -1.0):
            return
        store.put(account, namespace, data, updated)

    module.hook(f"iq-get/self/{PRIVATE}:query", get)
    module.hook(f"iq-set/self/{PRIVATE}:query", put)
    module.hook("account_removed", store.remove_account)
    module.hook("link_up", link_up)
    module.hook("link_extension", extension)
    module.add_item("xmpp-account-feature", PRIVATE)
