"""The owner namespace's rows of the router's table (XEP-0060 §8): configure, default, delete, purge,
manage subscriptions and affiliations. Imported by the module, which registers them in `OPERATIONS`."""

from __future__ import annotations

from lxml import etree

from . import forms
from .nodes import AFFILIATIONS, Node, Subscription
from .router import Failed, Request, _bare, _ps, configure_form, operation
from .service import EVENT, OWNER, PubsubService, q


# ==================================================================== the table: owner namespace
# <configure node='N'/>
@operation("get", OWNER, "configure", "required", "owner", "config-node")
def configure_get(r: Request):
    out = _ps(OWNER)
    c = etree.SubElement(out, q(OWNER, "configure"), node=r.node.name)
    c.append(forms.build(forms.NODE_CONFIG, r.node.config, forms.NODE_OPTIONS))
    return out


# <configure node='N'><x type='submit'>…</x></configure>
@operation("set", OWNER, "configure", "required", "owner", "config-node")
def configure_set(r: Request):
    form = r.op.find(q(forms.DATA, "x"))
    if form is None:
        raise Failed("modify", "bad-request")
    config = configure_form(r, form, r.node)
    node = r.node
    node.config.update(config)
    limit = int(node.config.get("max_items") or 1)
    while len(node.items) > max(limit, 1):
        r.svc.retract(node, [next(iter(node.items))], False, r.now)
    r.svc.node_changed(node, r.now)
    if node.config.get("notify_config"):
        ev = etree.Element(q(EVENT, "configuration"), node=node.name)
        if node.config.get("deliver_payloads", True):
            ev.append(forms.build(forms.NODE_CONFIG, node.config, forms.NODE_OPTIONS, "result"))
        r.svc.notify_subscribers(node, ev, r.now)
    return None


# <default/> (node configuration)
@operation("get", OWNER, "default", "none", "none", "retrieve-default")
def owner_default(r: Request):
    out = _ps(OWNER)
    d = etree.SubElement(out, q(OWNER, "default"))
    plugin = "pep" if r.svc.is_pep(r.host) else r.svc.opts.node_plugin
    d.append(forms.build(forms.NODE_CONFIG, r.svc.default_config(plugin), forms.NODE_OPTIONS))
    return out


# <delete node='N'>[<redirect uri='xmpp:…'/>]</delete>
@operation("set", OWNER, "delete", "required", "owner", "delete-nodes")
def delete(r: Request):
    red = r.op.find(q(OWNER, "redirect"))
    r.svc.delete(r.node, red.get("uri") if red is not None else None, r.now)
    return None


# <purge node='N'/>
@operation("set", OWNER, "purge", "required", "purge", "purge-nodes")
def purge(r: Request):
    if not r.node.config.get("persist_items", True):
        raise Failed("cancel", "feature-not-implemented", "unsupported", "persistent-items")
    r.svc.purge(r.node, r.now)
    return None


# <subscriptions node='N'/>
@operation("get", OWNER, "subscriptions", "required", "owner", "manage-subscriptions")
def owner_subscriptions_get(r: Request):
    out = _ps(OWNER)
    el = etree.SubElement(out, q(OWNER, "subscriptions"), node=r.node.name)
    for s in r.node.subscriptions.values():
        etree.SubElement(el, q(OWNER, "subscription"), jid=s.jid, subscription=s.state, subid=s.subid)
    return out


# <subscriptions node='N'><subscription jid='J' subscription='none|pending|subscribed' [subid='S']/>…
@operation("set", OWNER, "subscriptions", "required", "owner", "manage-subscriptions")
def owner_subscriptions_set(r: Request):
    svc, node = r.svc, r.node
    for s in r.op.findall(q(OWNER, "subscription")):
        jid, state, subid = s.get("jid"), s.get("subscription"), s.get("subid")
        if not jid or state not in ("none", "pending", "subscribed", "unconfigured"):
            raise Failed("modify", "bad-request")
        subs = [x for x in node.subscriptions_of(jid) if subid is None or x.subid == subid]
        if state == "none":
            for x in subs:
                svc.remove_subscription(node, x.subid, r.now)
            continue
        sub = subs[0] if subs else Subscription(jid, svc.new_item_id(), "none")
        was = sub.state
        sub.state = state
        svc.set_subscription(node, sub, r.now)
        if was != "subscribed" and state == "subscribed":
            approved(svc, node, sub, r.now)
    return None


def approved(svc: PubsubService, node: Node, sub: Subscription, now: float) -> None:
    """A pending subscription approved: the subscriber is told (XEP-0060 §8.6)."""
    ev = etree.Element(q(EVENT, "subscription"), node=node.name, jid=sub.jid, subscription="subscribed",
                       subid=sub.subid)
    svc.deliver(svc.message(node, sub.jid, ev), now)


# <affiliations node='N'/>
@operation("get", OWNER, "affiliations", "required", "owner", "modify-affiliations")
def owner_affiliations_get(r: Request):
    out = _ps(OWNER)
    el = etree.SubElement(out, q(OWNER, "affiliations"), node=r.node.name)
    for jid, aff in r.node.affiliations.items():
        etree.SubElement(el, q(OWNER, "affiliation"), jid=jid, affiliation=aff)
    return out


# <affiliations node='N'><affiliation jid='J' affiliation='owner|publisher|…|none|outcast'/>…
@operation("set", OWNER, "affiliations", "required", "owner", "modify-affiliations")
def owner_affiliations_set(r: Request):
    node, changes = r.node, []
    for a in r.op.findall(q(OWNER, "affiliation")):
        jid, aff = _bare(a.get("jid") or ""), a.get("affiliation")
        if not jid or aff not in AFFILIATIONS:
            raise Failed("modify", "bad-request")
        changes.append((jid, aff))
    owners = set(node.owners())
    for jid, aff in changes:
        if aff == "owner":
            owners.add(jid)
        else:
            owners.discard(jid)
    if not owners and node.owners():
        raise Failed("modify", "not-acceptable")       # a node keeps an owner
    for jid, aff in changes:
        r.svc.set_affiliation(node, jid, aff, r.now)
    return None
