"""PEP (XEP-0163): a pubsub service on every account's bare JID, through the routing table's narrow
hooks (`iq-set/self/…pubsub:pubsub`, `iq-get/bare/…pubsub:pubsub`…), and `+notify` filtering with
entity capabilities (XEP-0115).

Caps: a resource's presence carries `<c node ver hash/>`; `ver` -> features is cached (verified
against the hash, else kept for that JID only). An unknown `ver` is asked with disco#info to the
resource (the answer is an iq to the domain, caught on `iq/host`). Who gets a PEP event: the
owner's own resources and the local resources of the contacts that may see the owner's presence
(either roster says so), whose caps have `<node>+notify`, within the node's access model; and
the node's explicit subscribers. The `+notify` features of the resources here are indexed (node ->
resources that want it), kept as their caps are learnt and their presence changes, so a publish
looks at the resources that want its node, not at every account. A resource whose caps become
known gets the last item of each such node (send_last_published_item on_sub_and_presence).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
from collections import OrderedDict

from lxml import etree

from ..stanza import element
from .router import handle
from .service import OWNER, PUBSUB, PubsubService

CAPS = "http://jabber.org/protocol/caps"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"

ACCOUNT_FEATURES = tuple(f"{PUBSUB}#{f}" for f in (
    "access-presence", "access-open", "access-roster", "access-whitelist", "auto-create", "auto-subscribe",
    "create-nodes", "delete-items", "delete-nodes", "filtered-notifications", "item-ids", "last-published",
    "multi-items", "persistent-items", "publish", "publish-options", "purge-nodes", "retract-items",
    "retrieve-items", "subscribe", "config-node", "rsm")) + (PUBSUB,)


def verification_string(query: etree._Element) -> str:
    ids = sorted("%s/%s/%s/%s" % (i.get("category", ""), i.get("type", ""),
                                  i.get("{http://www.w3.org/XML/1998/namespace}lang", ""), i.get("name", ""))
                 for i in query.findall("{%s}identity" % DISCO_INFO))
    feats = sorted(f.get("var", "") for f in query.findall("{%s}feature" % DISCO_INFO))
    s = "".join(x + "<" for x in ids) + "".join(x + "<" for x in feats)
    forms = []
    for x in query.findall("{jabber:x:data}x"):
        fields = {f.get("var"): sorted(v.text or "" for v in f.findall("{jabber:x:data}value"))
                  for f in x.findall("{jabber:x:data}field")}
        ft = (fields.pop("FORM_TYPE", [""]) or [""])[0]
        forms.append((ft, fields))
    for ft, fields in sorted(forms, key=lambda t: t[0]):
        s += ft + "<"
        for var in sorted(fields):
            s += var + "<" + "".join(v + "<" for v in fields[var])
    return s


class Caps:
    """ver -> features (verified, shared), full JID -> features (unverified answers), and the asks out."""

    def __init__(self, svc: PubsubService, limit: int):
        self.svc, self.limit = svc, limit
        self.by_ver: OrderedDict[str, frozenset[str]] = OrderedDict()
        self.by_jid: dict[str, frozenset[str]] = {}
        self.asked: dict[str, tuple[str, str, str]] = {}     # iq id -> (full JID, ver, hash)
        self.ids = itertools.count(1)
        self.notify: dict[str, set[str]] = {}                # node -> full JIDs here with its +notify
        self.notified: dict[str, frozenset[str]] = {}        # full JID -> the nodes it is indexed under

    def index(self, s, feats: frozenset[str] | None) -> None:
        """The resource `s` wants the nodes of its `+notify` features (none: it is dropped)."""
        jid = str(s.jid)
        self.unindex(jid)
        names = frozenset(f[:-7] for f in feats or () if f.endswith("+notify"))
        if names:
            self.notified[jid] = names
            for n in names:
                self.notify.setdefault(n, set()).add(jid)

    def unindex(self, jid: str) -> None:
        for n in self.notified.pop(jid, ()):
            d = self.notify.get(n)
            if d is not None:
                d.discard(jid)
                if not d:
                    del self.notify[n]

    def unbound(self, s, now: float) -> None:
        """Hook xmpp_resource_unbound."""
        if s.jid is not None:
            self.unindex(str(s.jid))
            self.gone(str(s.jid))

    def presence(self, ev) -> None:
        """An available presence of a resource here: learn its caps (ask when unknown), then the last items."""
        s, el = ev.session, ev.stanza
        if el.get("type") == "unavailable":
            self.gone(str(s.jid))
            self.unindex(str(s.jid))
            s.pubsub_caps = None
        if el.get("type") is not None:
            return None
        c = el.find("{%s}c" % CAPS)
        if c is None or not c.get("ver"):
            self.unindex(str(s.jid))
            s.pubsub_caps = None
            return None
        ver, jid = c.get("ver"), str(s.jid)
        if getattr(s, "pubsub_caps", None) == ver:
            return None
        s.pubsub_caps = ver
        if ver in self.by_ver:
            self.index(s, self.by_ver[ver])
            self.send_last_items(s, ev.now, self.by_ver[ver])
            return None
        self.unindex(jid)                      # until its answer: unknown caps want nothing
        iq_id = f"caps-{next(self.ids)}"
        self.asked[iq_id] = (jid, ver, c.get("hash") or "")
        while len(self.asked) > self.limit:           # asks never answered (the client left)
            del self.asked[next(iter(self.asked))]
        iq = element("iq", {"type": "get", "id": iq_id, "from": self.svc.xmpp_domain, "to": jid})
        etree.SubElement(iq, "{%s}query" % DISCO_INFO, nsmap={None: DISCO_INFO},
                         node=f"{c.get('node', '')}#{ver}")
        s.send(iq)
        return None

    def answer(self, ev):
        """A resource's disco#info answer to our ask (an iq result to the domain)."""
        el = ev.stanza
        asked = self.asked.get(el.get("id") or "")
        if asked is None or asked[0] != str(ev.session.jid):
            return None                 # not ours, or not from the resource we asked
        del self.asked[el.get("id")]
        jid, ver, algo = asked
        query = el.find("{%s}query" % DISCO_INFO)
        if el.get("type") != "result" or query is None:
            return True
        feats = frozenset(f.get("var", "") for f in query.findall("{%s}feature" % DISCO_INFO))
        hashes = {"sha-1": hashlib.sha1, "sha-256": hashlib.sha256}
        h = hashes.get(algo)
        if h is not None and base64.b64encode(h(verification_string(query).encode()).digest()).decode() == ver:
            self.by_ver[ver] = feats
            while len(self.by_ver) > self.limit:
                self.by_ver.popitem(last=False)
        else:
            self.by_jid[jid], self.by_jid[jid + "#ver"] = feats, ver
            while len(self.by_jid) > 2 * self.limit:
                del self.by_jid[next(iter(self.by_jid))]
        s = ev.session
        if str(s.jid) == jid and getattr(s, "pubsub_caps", None) == ver:
            self.index(s, feats)
            self.send_last_items(s, ev.now, feats)
        return True

    def gone(self, jid: str) -> None:
        self.by_jid.pop(jid, None)
        self.by_jid.pop(jid + "#ver", None)

    # ---------------------------------------------------------------- who gets a PEP event
    def interested(self, node, now: float) -> list[str]:
        """The resources here that get `node`'s events: from the index, those allowed to see them."""
        svc = self.svc
        wanting = self.notify.get(node.name)
        if not wanting or not svc.is_pep(node.host):
            return []
        owner = node.host
        allowed: dict[str, bool] = {}            # bare JID -> may see it (asked once per account)
        out = []
        for jid in list(wanting):
            b = jid.split("/", 1)[0]
            ok = allowed.get(b)
            if ok is None:
                ok = allowed[b] = b == owner or (svc.access(node, b) is None and svc.presence_ok(owner, b))
            if ok:
                out.append(jid)
        return out

    def send_last_items(self, s, now: float, f: frozenset[str]) -> None:
        """The last item of every PEP node `s` may see and wants (its own and its contacts')."""
        svc = self.svc
        if not f:
            return
        me = str(s.jid.bare)
        for node in list(svc.pep.all()):
            if node.name + "+notify" not in f or node.config.get("send_last_published_item") != "on_sub_and_presence":
                continue
            if node.host != me and (svc.access(node, me) is not None or not svc.presence_ok(node.host, me)):
                continue
            svc.send_last(node, str(s.jid), now)


class Pep:
    """The narrow hooks of PEP on every account."""

    def __init__(self, svc: PubsubService, caps: Caps):
        self.svc, self.caps = svc, caps

    def own(self, ev):
        """iq to the sender's own bare JID (or without `to`)."""
        if ev.stanza.get("to") is None:
            ev.stanza.set("to", str(ev.to))
        handle(self.svc, str(ev.to), ev.session, ev.stanza, ev.now)
        ev.stanza.attrib.pop("to", None)
        return True

    def other(self, ev):
        """iq to another account's bare JID: its PEP service."""
        handle(self.svc, str(ev.to.bare), ev.session, ev.stanza, ev.now)
        return True

    def disco_items(self, ev):
        el = ev.stanza
        if el[0].get("node"):
            return None
        host = str(ev.to.bare)
        q = etree.Element("{%s}query" % DISCO_ITEMS, nsmap={None: DISCO_ITEMS})
        for n in self.svc.pep.nodes(host):
            if host == str(ev.session.jid.bare) or self.svc.access(n, str(ev.session.jid.bare)) is None:
                etree.SubElement(q, "{%s}item" % DISCO_ITEMS, jid=host, node=n.name)
        ev.router.result(ev.session, el, q)
        return True


def install(module, svc: PubsubService, caps: Caps) -> Pep:
    pep = Pep(svc, caps)
    for ns in (PUBSUB, OWNER):
        for typ in ("get", "set"):
            module.hook(f"iq-{typ}/self/{ns}:pubsub", pep.own)
            module.hook(f"iq-{typ}/bare/{ns}:pubsub", pep.other)
    module.hook(f"iq-get/self/{DISCO_ITEMS}:query", pep.disco_items)
    module.hook(f"iq-get/bare/{DISCO_ITEMS}:query", pep.disco_items)
    module.hook("presence/initial", caps.presence)
    module.hook("iq/host", caps.answer)
    module.hook("xmpp_resource_unbound", caps.unbound)
    for f in ACCOUNT_FEATURES:
        module.add_item("xmpp-account-feature", f)
    module.add_item("xmpp-account-identity", ("pubsub", "pep"))      # XEP-0163 §6.1
    module.add_item("xmpp-feature", PUBSUB + "#pep")      # hm: servers say pep support on the domain too
    svc.notifiers.append(caps.interested)
    return pep
