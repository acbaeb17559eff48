"""The service's domain (`pubsub.<domain>`, an `xmpp-host` item): pubsub requests go to the router;
disco#info and disco#items (nodes, children of collections, item ids, node meta-data); the owner's
answer to a subscription authorization form (a message)."""

from __future__ import annotations

from lxml import etree

from ..stanza import element
from . import forms
from .owner import approved
from .router import Failed, error_reply, handle
from .service import PUBSUB, PubsubService, q

DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"


def features(svc: PubsubService, plugin: str) -> list[str]:
    p = svc.plugin(plugin) or svc.builtin["flat"]
    return [PUBSUB, *(f"{PUBSUB}#{f}" for f in p.features)]


class ServiceHost:
    def __init__(self, svc: PubsubService):
        self.svc = svc

    def __call__(self, session, el: etree._Element, to, now: float) -> None:
        name = etree.QName(el).localname
        if name == "iq":
            self.iq(session, el, to, now)
        elif name == "message":
            self.message(session, el, now)

    def iq(self, session, el, to, now: float) -> None:
        svc = self.svc
        typ = el.get("type")
        if typ not in ("get", "set"):
            return
        if to.local is not None or to.resource is not None:
            session.send(error_reply(el, Failed("cancel", "item-not-found")))
            return
        if handle(svc, svc.domain, session, el, now):
            return
        child = el[0] if len(el) else None
        if typ == "get" and child is not None and child.tag == q(DISCO_INFO, "query"):
            self.reply(session, el, self.disco_info(child.get("node"), now))
        elif typ == "get" and child is not None and child.tag == q(DISCO_ITEMS, "query"):
            self.reply(session, el, self.disco_items(child.get("node"), now))
        else:
            session.send(error_reply(el, Failed("cancel", "service-unavailable")))

    def reply(self, session, iq, payload) -> None:
        if isinstance(payload, Failed):
            session.send(error_reply(iq, payload))
            return
        r = element("iq", {"type": "result", "id": iq.get("id"), "from": iq.get("to"), "to": iq.get("from")})
        r.append(payload)
        session.send(r)

    def disco_info(self, node_name: str | None, now: float):
        svc = self.svc
        qe = etree.Element(q(DISCO_INFO, "query"), nsmap={None: DISCO_INFO})
        if not node_name:
            etree.SubElement(qe, q(DISCO_INFO, "identity"), category="pubsub", type="service", name="PubSub")
            for f in (DISCO_INFO, DISCO_ITEMS, *features(svc, svc.opts.node_plugin)):
                etree.SubElement(qe, q(DISCO_INFO, "feature"), var=f)
            return qe
        node = svc.get(svc.domain, node_name, now)
        if node is None:
            return Failed("cancel", "item-not-found")
        qe.set("node", node_name)
        etree.SubElement(qe, q(DISCO_INFO, "identity"), category="pubsub",
                         type="collection" if node.is_collection else "leaf")
        for f in (DISCO_INFO, DISCO_ITEMS, *features(svc, node.plugin)):
            etree.SubElement(qe, q(DISCO_INFO, "feature"), var=f)
        meta = {k: node.config.get(k) for k in ("title", "description", "access_model", "publish_model", "type",
                                                 "max_items")}
        x = forms.build("http://jabber.org/protocol/pubsub#meta-data", meta, forms.NODE_OPTIONS, "result")
        f = etree.SubElement(x, q(forms.DATA, "field"), var="pubsub#owner")
        for o in node.owners():
            etree.SubElement(f, q(forms.DATA, "value")).text = o
        qe.append(x)
        return qe

    def disco_items(self, node_name: str | None, now: float):
        svc, tree = self.svc, self.svc.tree
        qe = etree.Element(q(DISCO_ITEMS, "query"), nsmap={None: DISCO_ITEMS})
        if not node_name:
            for n in tree.nodes(svc.domain):
                if not tree.parents(n):
                    etree.SubElement(qe, q(DISCO_ITEMS, "item"), jid=svc.domain, node=n.name,
                                     **({"name": n.config["title"]} if n.config.get("title") else {}))
            return qe
        node = svc.get(svc.domain, node_name, now)
        if node is None:
            return Failed("cancel", "item-not-found")
        qe.set("node", node_name)
        for n in tree.children(node):
            etree.SubElement(qe, q(DISCO_ITEMS, "item"), jid=svc.domain, node=n.name)
        for it in svc.plugin_of(node).get_items(node, now):
            etree.SubElement(qe, q(DISCO_ITEMS, "item"), jid=svc.domain, name=it.id)
        return qe

    def message(self, session, el, now: float) -> None:
        """XEP-0060 §8.6.2: an owner's submitted authorization form."""
        svc = self.svc
        x = el.find(q(forms.DATA, "x"))
        if x is None or x.get("type") != "submit" or forms.form_type(x) != forms.SUBSCRIBE_AUTHORIZATION:
            return
        f = forms.fields(x)
        name = (f.get("pubsub#node") or [""])[0]
        jid = (f.get("pubsub#subscriber_jid") or [""])[0]
        allow = (f.get("pubsub#allow") or ["0"])[0] in ("1", "true")
        node = svc.get(svc.domain, name, now)
        bare = (el.get("from") or "").split("/", 1)[0]
        if node is None or node.affiliation(bare) != "owner":
            return
        subid = (f.get("pubsub#subid") or [None])[0]
        for sub in [s for s in node.subscriptions_of(jid) if s.state == "pending" and subid in (None, s.subid)]:
            if allow:
                sub.state = "subscribed"
                svc.set_subscription(node, sub, now)
                approved(svc, node, sub, now)
            else:
                svc.remove_subscription(node, sub.subid, now)
