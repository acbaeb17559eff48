"""XEP-0054 vCard-temp (an account's own vCard, set and get; another account's, get) and XEP-0153
avatar hashes (the PHOTO's SHA-1 in `<x xmlns='vcard-temp:x:update'>` on the account's presence).

One account has one vCard on every server: a change is sent over the tree (`XMPP_VCARD`, the
newer `updated` wins), and at each link-up both sides announce what they have (`XMPP_VCARD_INDEX`,
account -> updated) and answer the other's index with the vCards it lacks or has older.

Stored in the `xmpp_vcard` store. What is small is in memory from the start (each account's photo
hash, needed on every presence); the vCards themselves are read with `storage.read` on a miss and
then cached (a bounded cache; without a database everything stays in memory). A vCard over
`xmpp.vcard_max_bytes` is refused with not-acceptable.

    xmpp_vcard(account PK (case-folded), vcard TEXT (the serialised element), photo_hash, updated)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections import OrderedDict

from lxml import etree

from relay.core.storage import Op, Schema

from .stanza import element

VCARD = "vcard-temp"
UPDATE = "vcard-temp:x:update"
_VCARD_TAG = "{%s}vCard" % VCARD
_X_TAG = "{%s}x" % UPDATE
FRAME, INDEX = "XMPP_VCARD", "XMPP_VCARD_INDEX"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
CACHE = 256            # vCards kept in memory besides the hashes (a database holds the rest)

# What the store loads when it opens (Schema.loads: each ? is the server's id).
_LOAD = "SELECT account, photo_hash, updated FROM xmpp_vcard"

SCHEMA = Schema("xmpp_vcard", ("""
CREATE TABLE xmpp_vcard (
    account TEXT PRIMARY KEY,
    vcard TEXT NOT NULL,
    photo_hash TEXT NOT NULL,
    updated {real} NOT NULL
);
""",), tables=("xmpp_vcard",), loads=(_LOAD,))

_PUT = ("INSERT INTO xmpp_vcard(account, vcard, photo_hash, updated) VALUES (?,?,?,?) "
        "ON CONFLICT(account) DO UPDATE SET vcard = excluded.vcard, photo_hash = excluded.photo_hash, "
        "updated = excluded.updated")


def photo_hash(vcard: etree._Element) -> str:
    """XEP-0153 §4.1: hex SHA-1 of the decoded PHOTO/BINVAL; "" when there is none (or it is not base64)."""
    binval = vcard.findtext("{%s}PHOTO/{%s}BINVAL" % (VCARD, VCARD))
    if not binval:
        return ""
    try:
        data = base64.b64decode("".join(binval.split()), validate=True)
    except (binascii.Error, ValueError):
        return ""
    return hashlib.sha1(data).hexdigest()


class VcardStore:
    """Photo hashes of every account in memory; vCards cached, the rest read when asked for."""

    def __init__(self, storage):
        self.storage = storage
        self.hashes: dict[str, str] = {}         # account key -> photo hash ("" for no photo)
        self.updated: dict[str, float] = {}      # account key -> when its vCard was set (the newer wins)
        self.cache: OrderedDict[str, bytes] = OrderedDict()
        self.bounded = storage.db is not None    # without a database the cache is all there is

    def load(self) -> None:
        self.storage.open_store(SCHEMA)
        rows = self.storage.load(_LOAD)
        self.hashes = {k: h for k, h, _ in rows}
        self.updated = {k: t for k, _, t in rows}

    def has(self, account: str) -> bool:
        return account.lower() in self.hashes

    def get(self, account: str, done) -> None:
        """`done(bytes or None)`: the stored vCard; None for none (or a failed read)."""
        key = account.lower()
        if key not in self.hashes:
            done(None)
            return
        data = self.cache.get(key)
        if data is not None:
            self.cache.move_to_end(key)
            done(data)
            return

        def read(rows):
            if rows:
                self._cache(key, rows[0][0].encode("utf-8"))
            done(rows[0][0].encode("utf-8") if rows else None)
        self.storage.read("SELECT vcard FROM xmpp_vcard WHERE account = ?", (key,), read)

    def put(self, account: str, data: bytes, digest: str, now: float) -> None:
        key = account.lower()
        self.hashes[key] = digest
        self.updated[key] = now
        self._cache(key, data)
        self.storage.queue.put(Op(_PUT, (key, data.decode("utf-8"), digest, now)))

    def remove(self, account: str) -> None:
        key = account.lower()
        if self.hashes.pop(key, None) is not None:
            self.updated.pop(key, None)
            self.cache.pop(key, None)
            self.storage.queue.write("DELETE FROM xmpp_vcard WHERE account = ?", (key,))

    def _cache(self, key: str, data: bytes) -> None:
        self.cache[key] = data
        self.cache.move_to_end(key)
        while self.bounded and len(self.cache) > CACHE:
            self.cache.popitem(last=False)


def install(module, svc) -> None:
    store = VcardStore(module.core.storage)
    store.load()
    svc.vcards = store
    r = svc.router
    limit = svc.opts.vcard_max_bytes

    def reply(ev, data: bytes | None, owner: str | None) -> None:
        payload = etree.fromstring(data, _PARSER) if data else etree.Element(_VCARD_TAG, nsmap={None: VCARD})
        out = element("iq", {"type": "result", "id": ev.stanza.get("id"), "from": owner})
        out.append(payload)
        r.to_full(ev.session, out)

    # <iq type='get'><vCard xmlns='vcard-temp'/></iq>
    def get_own(ev):
        store.get(ev.session.account, lambda data: reply(ev, data, ev.stanza.get("to")))
        return True

    # <iq type='get' to='user@domain'><vCard xmlns='vcard-temp'/></iq>
    def get_other(ev):
        account = ev.to.local
        if module.core.accounts.get(account) is None:
            r.error(ev.session, ev.stanza, "cancel", "service-unavailable")
            return True
        store.get(account, lambda data: reply(ev, data, str(ev.to.bare)))
        return True

    # <iq type='set'><vCard xmlns='vcard-temp'>...</vCard></iq>
    def set_own(ev):
        s, iq = ev.session, ev.stanza
        vcard = iq[0]
        vcard.tail = None
        data = etree.tostring(vcard, encoding="utf-8")
        if len(data) > limit:
            r.error(s, iq, "modify", "not-acceptable")
            return True
        old = store.hashes.get(s.account.lower())
        digest = photo_hash(vcard)
        store.put(s.account, data, digest, ev.now)
        r.result(s, iq)
        send(s.account.lower(), data, ev.now, None)
        if digest != old:
            _rebroadcast(r, s, digest, ev.now)
        return True

    # <presence>...<x xmlns='vcard-temp:x:update'><photo>SHA-1</photo></x></presence>
    def presence(ev):
        if ev.stanza.get("type") is None:
            digest = store.hashes.get(ev.session.account.lower())
            if digest is not None:
                with_photo(ev.stanza, digest)
        return None                              # the table's own row goes on

    def send(key: str, data: bytes, updated: float, servers) -> None:
        router = module.core.net.router
        if router is not None:
            router.send_extension(FRAME, {"account": key, "vcard": data.decode("utf-8"), "updated": updated},
                                  servers)

    def link_up(peer_id, *rest):
        router = module.core.net.router
        if router is not None:
            router.send_extension(INDEX, {"index": dict(store.updated)}, None)

    def extension(ftype, origin, payload, from_link=None):
        if ftype == FRAME:
            received(payload)
            return True
        if ftype == INDEX:
            index = payload.get("index") if isinstance(payload, dict) else None
            if isinstance(index, dict):
                for key, t in list(store.updated.items()):
                    theirs = index.get(key)
                    if not isinstance(theirs, (int, float)) or t > theirs:
                        store.get(key, lambda data, key=key, t=t: data and send(key, data, t, {origin}))
            return True
        return None

    def received(p) -> None:
        """A vCard set on another server: kept if it is newer than ours (and is one)."""
        try:
            key, text, updated = p["account"], p["vcard"], float(p["updated"])
            data = text.encode("utf-8")
            vcard = etree.fromstring(data, _PARSER) if len(data) <= 2 * limit else None
        except (KeyError, TypeError, ValueError, etree.XMLSyntaxError):
            return
        if vcard is None or vcard.tag != _VCARD_TAG or not isinstance(key, str) or key != key.lower() \
                or module.core.accounts.get(key) is None or updated <= store.updated.get(key, -1.0):
            return
        store.put(key, data, photo_hash(vcard), updated)

    module.hook(f"iq-get/self/{VCARD}:vCard", get_own)
    module.hook(f"iq-get/bare/{VCARD}:vCard", get_other)
    module.hook(f"iq-set/self/{VCARD}:vCard", set_own)
    for name in ("presence/initial", "presence/bare", "presence/full"):
        module.hook(name, presence)
    module.hook("account_removed", store.remove)
    module.hook("link_up", link_up)
    module.hook("link_extension", extension)
    module.add_item("xmpp-feature", VCARD)
    module.add_item("xmpp-account-feature", VCARD)


def with_photo(presence: etree._Element, digest: str) -> None:
    """`presence` with one update element carrying `digest` (the client's own is replaced)."""
    for old in presence.findall(_X_TAG):
        presence.remove(old)
    x = etree.SubElement(presence, _X_TAG, nsmap={None: UPDATE})
    etree.SubElement(x, "{%s}photo" % UPDATE).text = digest or None


def _rebroadcast(r, s, digest: str, now: float) -> None:
    """XEP-0153 §4.2: a new photo is announced at once on the presence each resource last sent."""
    for x in r.sessions_of(s.jid.bare):
        if x.presence is not None:
            with_photo(x.presence, digest)
            r.broadcast(x, x.presence, now)
