"""The XEP-0060 router: one table of operations and one dispatch with every check.

A request is `<iq><pubsub xmlns='…pubsub' | '…pubsub#owner'><VERB …/>[companions]</pubsub></iq>`;
its row is the first child with one for (iq type, namespace, name), so `<create/><configure/>`
is a create and `<publish/><publish-options/>` a publish. `dispatch` then checks, in this order:
the node plugin supports the row's feature; the node is named when the row needs one, and
exists (a virtual tree makes it; a publish may auto-create it); the sender's access for the row
(`owner`, `publish`, `retract`, `subscribe`, `retrieve`, `purge`, `create`), which asks the
affiliation, the node's access and publish models and the topic ACL (one rule set with MQTT).
Handlers only do the operation; each is headed by its syntax. The owner namespace's rows are in
owner.py (the same table).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from lxml import etree

from relay.core.topics import valid_topic_name

from .. import namespaces as xns
from ..stanza import element
from . import forms
from .nodes import Item, Node, Subscription
from .service import ERRORS, OWNER, PUBSUB, PubsubService, payload_bytes, q

RSM = "http://jabber.org/protocol/rsm"
MAX_NAME = 1024            # characters of a node name or an item id
C = "{%s}" % xns.CLIENT


class Later(Exception):
    """The node's items are elsewhere (federation.py): answer once they are here."""


class Failed(Exception):
    """A stanza error: type, RFC 6120 condition, pubsub#errors condition, unsupported feature."""

    def __init__(self, kind: str, condition: str, app: str | None = None, feature: str | None = None):
        super().__init__(condition)
        self.kind, self.condition, self.app, self.feature = kind, condition, app, feature


@dataclass
class Request:
    svc: PubsubService
    host: str                  # the service's domain, or the PEP account's bare JID
    session: object            # the client's C2sSession
    iq: etree._Element
    op: etree._Element         # the verb element
    pubsub: etree._Element
    jid: str                   # the sender, full
    bare: str
    now: float
    node: Node | None = None
    after: Callable[[], None] | None = None      # runs once the result is sent (last item on subscribe)
    fetched: bool = False      # asked again once the node's items came from the other servers

    def companion(self, name: str) -> etree._Element | None:
        return self.pubsub.find(q(PUBSUB, name))


@dataclass(frozen=True)
class Operation:
    handler: Callable[[Request], etree._Element | None]
    node: str           # "required", "optional" (a node attr is looked up when given), "none", "create"
    access: str         # who may: none, owner, publish, retract, subscribe, retrieve, purge, create
    feature: str        # the pubsub#feature the node plugin must have


OPERATIONS: dict[tuple[str, str, str], Operation] = {}


def operation(typ: str, ns: str, name: str, node: str, access: str, feature: str):
    def add(fn):
        OPERATIONS[(typ, ns, name)] = Operation(fn, node, access, feature)
        return fn
    return add


def request_of(svc: PubsubService, host: str, session, iq: etree._Element, now: float) -> Request | None:
    ps = iq[0] if len(iq) else None
    if ps is None or ps.tag not in (q(PUBSUB, "pubsub"), q(OWNER, "pubsub")):
        return None
    verb = next((c for c in ps if isinstance(c.tag, str)
                 and (iq.get("type"), etree.QName(c).namespace, etree.QName(c).localname) in OPERATIONS), None)
    jid = iq.get("from") or ""
    return Request(svc, host, session, iq, verb, ps, jid, jid.split("/", 1)[0], now)


def dispatch(r: Request) -> etree._Element | None:
    """The reply payload (None: an empty result); raises Failed."""
    if r.op is None:
        if len(r.pubsub) == 0:
            raise Failed("modify", "bad-request")
        raise Failed("cancel", "feature-not-implemented", "unsupported", _feature_of(r.pubsub[0]))
    qn = etree.QName(r.op)
    row = OPERATIONS[(r.iq.get("type"), qn.namespace, qn.localname)]
    svc = r.svc
    name = r.op.get("node")
    if name is not None and (len(name) > MAX_NAME or not name):
        raise Failed("modify", "not-acceptable")
    for it in r.op.iter(q(PUBSUB, "item")):
        if len(it.get("id") or "") > MAX_NAME:
            raise Failed("modify", "not-acceptable")
    if row.node in ("required", "create") or (row.node == "optional" and name):
        if row.node == "required" and not name:
            raise Failed("modify", "bad-request", "nodeid-required")
        if row.node == "create":
            r.node = svc.tree_of(r.host).get(r.host, name) if name else None
        else:
            r.node = svc.get(r.host, name, r.now) if name else None
        if r.node is None and row.node == "required":
            if row.access != "publish":
                raise Failed("cancel", "item-not-found")
            r.node = auto_create(r, name)
    plugin = svc.plugin_of(r.node) if r.node is not None else svc.plugin("pep" if svc.is_pep(r.host) else
                                                                          svc.opts.node_plugin)
    if row.feature not in plugin.features:
        raise Failed("cancel", "feature-not-implemented", "unsupported", row.feature)
    check(r, row.access)
    return row.handler(r)


def check(r: Request, access: str) -> None:
    """The one access check of every operation."""
    svc, node, bare = r.svc, r.node, r.bare
    admin = svc.is_pep(r.host) and bare == r.host
    if access == "none":
        return
    if access == "create":
        if svc.is_pep(r.host):
            if not admin:
                raise Failed("auth", "forbidden")
        elif not svc.may_create(bare):
            raise Failed("auth", "forbidden")
        return
    aff = node.affiliation(bare)
    if access in ("owner", "purge"):
        if not (aff == "owner" or admin or (access == "purge" and aff == "publisher")):
            raise Failed("auth", "forbidden")
        return
    if access == "publish":
        if not svc.may_publish(node, bare):
            raise Failed("auth", "forbidden")
        if not acl_ok(r, "publish", node.name):
            raise Failed("auth", "forbidden")
        return
    if access == "retract":
        if not (aff in ("owner", "publisher", "publish-only") or admin):
            raise Failed("auth", "forbidden")
        return
    if access in ("subscribe", "retrieve"):
        if access == "subscribe":
            jid = r.op.get("jid") or ""
            if jid.split("/", 1)[0] != bare:
                raise Failed("modify", "bad-request", "invalid-jid")
        if aff == "publish-only":
            raise Failed("auth", "forbidden")
        why = svc.access(node, bare)
        if why is not None:
            raise Failed(*why)
        if not acl_ok(r, "subscribe", node.name):
            raise Failed("auth", "forbidden")
        if access == "retrieve" and node.config.get("access_model") == "authorize" and aff not in (
                "owner", "publisher", "member") and not admin and not any(
                s.state == "subscribed" for s in node.subscriptions.values() if _bare(s.jid) == bare):
            raise Failed("auth", "not-authorized", "not-subscribed")
        return
    raise AssertionError(access)


def acl_ok(r: Request, action: str, name: str) -> bool:
    """The topic namespace's rules, for the service's nodes that are topics (PEP nodes are not)."""
    svc = r.svc
    if svc.is_pep(r.host) or not valid_topic_name(name):
        return True
    topics = svc.core.services.get("topics")
    if topics is None:
        return True
    local = r.bare.split("@", 1)[0] if r.bare.endswith("@" + svc.xmpp_domain) else None
    ip = getattr(getattr(r.session, "t", None), "peer_host", None)
    test = topics.may_publish if action == "publish" else topics.may_subscribe
    return test(name, local, r.jid, local, ip)


def auto_create(r: Request, name: str) -> Node:
    svc = r.svc
    if not svc.opts.auto_create:
        raise Failed("cancel", "item-not-found")
    check(r, "create")
    config = publish_options(r, None)
    return svc.create(r.host, name, r.bare, config, "pep" if svc.is_pep(r.host) else svc.opts.node_plugin, r.now)


def publish_options(r: Request, node: Node | None) -> dict:
    """`<publish-options>`: preconditions on an existing node, the configuration of a new one."""
    po = r.companion("publish-options")
    form = po.find(q(forms.DATA, "x")) if po is not None else None
    if form is None:
        return {}
    try:
        wanted = forms.parse(form, forms.NODE_OPTIONS, r.svc.opts.max_items_limit)
    except ValueError:
        raise Failed("modify", "conflict", "precondition-not-met") from None
    if node is not None:
        for k, v in wanted.items():
            if node.config.get(k) != v:
                raise Failed("cancel", "conflict", "precondition-not-met")
    return wanted


def _bare(jid: str) -> str:
    return jid.split("/", 1)[0]


def _feature_of(el) -> str:
    return etree.QName(el).localname if isinstance(el.tag, str) else "unknown"


def _ps(ns: str = PUBSUB) -> etree._Element:
    return etree.Element(q(ns, "pubsub"), nsmap={None: ns})


def configure_form(r: Request, form: etree._Element | None, node: Node | None) -> dict:
    if form is None or form.get("type") == "cancel":
        return {}
    try:
        config = forms.parse(form, forms.NODE_OPTIONS, r.svc.opts.max_items_limit)
    except ValueError:
        raise Failed("modify", "not-acceptable") from None
    if config.get("node_type") == "collection" and not r.svc.tree_of(r.host).collections:
        raise Failed("cancel", "feature-not-implemented", "unsupported", "collections")
    if config.get("collection"):
        tree = r.svc.tree_of(r.host)
        if not tree.collections:
            raise Failed("cancel", "feature-not-implemented", "unsupported", "collections")
        for name in config["collection"]:
            if tree.get(r.host, name) is None:
                raise Failed("cancel", "item-not-found")
        if node is not None and tree.would_cycle(node, config["collection"]):
            raise Failed("modify", "not-acceptable")
    return config


# ==================================================================== the table: user namespace
# <publish node='N'><item [id='I']>PAYLOAD</item>...</publish> [<publish-options><x type='submit'/>]
@operation("set", PUBSUB, "publish", "required", "publish", "publish")
def publish(r: Request):
    svc, node = r.svc, r.node
    publish_options(r, node)
    if node.is_collection:
        raise Failed("cancel", "feature-not-implemented", "unsupported", "publish")
    items = r.op.findall(q(PUBSUB, "item"))
    if not items:
        if node.config.get("persist_items", True) or node.config.get("deliver_payloads", True):
            raise Failed("modify", "bad-request", "item-required")
        items = [etree.Element(q(PUBSUB, "item"))]
    out = etree.SubElement(_ps(), q(PUBSUB, "publish"), node=node.name)
    limit = int(node.config.get("max_payload_size") or 0)
    made = []
    for it in items:
        children = [c for c in it if isinstance(c.tag, str)]
        if len(children) > 1:
            raise Failed("modify", "bad-request", "invalid-payload")
        if not children and node.config.get("deliver_payloads", True) and node.config.get("persist_items", True):
            raise Failed("modify", "bad-request", "payload-required")
        data = payload_bytes(children[0]) if children else b""
        if limit and len(data) > limit:
            raise Failed("modify", "not-acceptable", "payload-too-big")
        made.append(Item(it.get("id") or svc.new_item_id(), data, r.bare, r.now, svc.me))
    for item in made:
        svc.publish(node, item, r.now)
        etree.SubElement(out, q(PUBSUB, "item"), id=item.id)
    return out.getparent()


# <retract node='N' [notify='true']><item id='I'/>...</retract>
@operation("set", PUBSUB, "retract", "required", "retract", "retract-items")
def retract(r: Request):
    node = r.node
    ids = [i.get("id") for i in r.op.findall(q(PUBSUB, "item")) if i.get("id")]
    if not ids:
        raise Failed("modify", "bad-request", "item-required")
    for i in ids:
        item = node.items.get(i)
        if item is None:
            raise Failed("cancel", "item-not-found")
        if node.affiliation(r.bare) == "publish-only" and _bare(item.publisher) != r.bare:
            raise Failed("auth", "forbidden")
    notify = r.op.get("notify") in ("1", "true") or node.config.get("notify_retract", True)
    r.svc.retract(node, ids, notify, r.now)
    return None


# <subscribe node='N' jid='J'/> [<options><x type='submit'/></options>]
@operation("set", PUBSUB, "subscribe", "required", "subscribe", "subscribe")
def subscribe(r: Request):
    svc, node, jid = r.svc, r.node, r.op.get("jid")
    if not node.config.get("subscribe", True):
        raise Failed("cancel", "not-allowed", "closed-node")
    options = {}
    opt = r.companion("options")
    if opt is not None and opt.find(q(forms.DATA, "x")) is not None:
        options = _sub_options(r, opt.find(q(forms.DATA, "x")))
    if options.get("subscription_type") == "nodes" or node.is_collection:
        if not svc.tree_of(r.host).collections:
            raise Failed("cancel", "feature-not-implemented", "unsupported", "collections")
    existing = node.subscriptions_of(jid)
    if existing and not svc.opts.multi_subscribe:
        sub = existing[0]
    else:
        model = node.config.get("access_model")
        pending = model == "authorize" and node.affiliation(r.bare) not in ("owner", "publisher", "member")
        sub = Subscription(jid, svc.new_item_id(), "pending" if pending else "subscribed", options)
        svc.set_subscription(node, sub, r.now)
        if pending:
            ask_owners(r, node, sub)
    out = _ps()
    etree.SubElement(out, q(PUBSUB, "subscription"), node=node.name, jid=jid, subid=sub.subid,
                     subscription=sub.state)
    if sub.state == "subscribed" and node.config.get("send_last_published_item", "on_sub") != "never":
        r.after = lambda: svc.with_items(node, r.now, lambda now: svc.send_last(node, jid, now))
    return out


def ask_owners(r: Request, node: Node, sub: Subscription) -> None:
    """XEP-0060 §8.6: the owners get a form to approve a pending subscription."""
    for o in node.owners():
        msg = element("message", {"from": r.svc.domain if not r.svc.is_pep(r.host) else r.host, "to": o,
                                  "id": r.svc.new_item_id()})
        x = forms.build(forms.SUBSCRIBE_AUTHORIZATION, {}, {}, "form")
        for var, value in (("pubsub#node", node.name), ("pubsub#subscriber_jid", sub.jid),
                           ("pubsub#subid", sub.subid), ("pubsub#allow", "0")):
            f = etree.SubElement(x, q(forms.DATA, "field"), var=var)
            etree.SubElement(f, q(forms.DATA, "value")).text = value
        msg.append(x)
        r.svc.deliver(msg, r.now)


def _sub_options(r: Request, form) -> dict:
    try:
        return forms.parse(form, forms.SUB_OPTIONS, r.svc.opts.max_items_limit)
    except ValueError:
        raise Failed("modify", "bad-request", "invalid-options") from None


def _find_sub(r: Request) -> Subscription:
    node, jid, subid = r.node, r.op.get("jid") or r.jid, r.op.get("subid")
    if _bare(jid) != r.bare and node.affiliation(r.bare) != "owner":
        raise Failed("auth", "forbidden")
    subs = node.subscriptions_of(jid)
    if not subs:
        raise Failed("cancel", "unexpected-request", "not-subscribed")
    if subid:
        subs = [s for s in subs if s.subid == subid]
        if not subs:
            raise Failed("modify", "not-acceptable", "invalid-subid")
    elif len(subs) > 1:
        raise Failed("modify", "bad-request", "subid-required")
    return subs[0]


# <unsubscribe node='N' jid='J' [subid='S']/>
@operation("set", PUBSUB, "unsubscribe", "required", "none", "subscribe")
def unsubscribe(r: Request):
    sub = _find_sub(r)
    r.svc.remove_subscription(r.node, sub.subid, r.now)
    return None


# <options node='N' jid='J' [subid='S']/>
@operation("get", PUBSUB, "options", "required", "none", "subscription-options")
def options_get(r: Request):
    sub = _find_sub(r)
    out = _ps()
    o = etree.SubElement(out, q(PUBSUB, "options"), node=r.node.name, jid=sub.jid, subid=sub.subid)
    o.append(forms.build(forms.SUBSCRIBE_OPTIONS, {**_default_sub_options(), **sub.options}, forms.SUB_OPTIONS))
    return out


# <options node='N' jid='J' [subid='S']><x type='submit'/></options>
@operation("set", PUBSUB, "options", "required", "none", "subscription-options")
def options_set(r: Request):
    sub = _find_sub(r)
    form = r.op.find(q(forms.DATA, "x"))
    if form is None:
        raise Failed("modify", "bad-request", "invalid-options")
    sub.options.update(_sub_options(r, form))
    r.svc.set_subscription(r.node, sub, r.now)
    return None


def _default_sub_options() -> dict:
    return {"deliver": True, "include_body": False, "subscription_type": "items", "subscription_depth": "1"}


# <default [node='N']/> (subscription options)
@operation("get", PUBSUB, "default", "none", "none", "retrieve-default")
def sub_default(r: Request):
    out = _ps()
    d = etree.SubElement(out, q(PUBSUB, "default"))
    d.append(forms.build(forms.SUBSCRIBE_OPTIONS, _default_sub_options(), forms.SUB_OPTIONS))
    return out


# <items node='N' [max_items='M']>[<item id='I'/>...]</items> [<set xmlns='…rsm'><max/><after/><before/></set>]
@operation("get", PUBSUB, "items", "required", "retrieve", "retrieve-items")
def items(r: Request):
    svc, node = r.svc, r.node
    if svc.fed is not None and not r.fetched and not svc.fed.holds(node):
        raise Later()
    got = svc.plugin_of(node).get_items(node, r.now)
    ids = [i.get("id") for i in r.op.findall(q(PUBSUB, "item")) if i.get("id")]
    if ids:
        by_id = {i.id: i for i in got}
        got = [by_id[i] for i in ids if i in by_id]
        if not got:
            raise Failed("cancel", "item-not-found")
    if r.op.get("max_items"):
        try:
            got = got[:max(0, int(r.op.get("max_items")))]
        except ValueError:
            raise Failed("modify", "bad-request") from None
    out = _ps()
    el = etree.SubElement(out, q(PUBSUB, "items"), node=node.name)
    page = r.pubsub.find(q(RSM, "set"))
    total = len(got)
    first_index = 0
    if page is not None:
        got, first_index = rsm_page(got, page)
    payload = True
    for it in got:
        el.append(svc.item_element(it, payload, PUBSUB))
    if page is not None:
        s = etree.SubElement(out, q(RSM, "set"), nsmap={None: RSM})
        if got:
            etree.SubElement(s, q(RSM, "first"), index=str(first_index)).text = got[0].id
            etree.SubElement(s, q(RSM, "last")).text = got[-1].id
        etree.SubElement(s, q(RSM, "count")).text = str(total)
    return out


def rsm_page(got: list, page) -> tuple[list, int]:
    """XEP-0059 over the items, newest first: `max`, `after`/`before` an item id, `index`."""
    try:
        limit = int(page.findtext(q(RSM, "max")) or len(got))
        index = page.findtext(q(RSM, "index"))
    except ValueError:
        raise Failed("modify", "bad-request") from None
    ids = [i.id for i in got]
    after, before = page.findtext(q(RSM, "after")), page.find(q(RSM, "before"))
    start = 0
    if after:
        if after not in ids:
            raise Failed("cancel", "item-not-found")
        start = ids.index(after) + 1
    elif before is not None:
        end = ids.index(before.text) if before.text in ids else len(ids)
        if before.text and before.text not in ids:
            raise Failed("cancel", "item-not-found")
        start = max(0, end - limit)
        return got[start:end], start
    elif index:
        start = int(index) if index.isdigit() else 0
    return got[start:start + limit], start


# <create [node='N']/> [<configure><x type='submit'/></configure>]
@operation("set", PUBSUB, "create", "create", "create", "create-nodes")
def create(r: Request):
    svc, name = r.svc, r.op.get("node")
    if r.node is not None:
        raise Failed("cancel", "conflict")
    instant = not name
    if instant:
        if not svc.opts.instant_nodes:
            raise Failed("modify", "not-acceptable", "nodeid-required")
        name = svc.new_item_id()
    conf = r.companion("configure")
    config = configure_form(r, conf.find(q(forms.DATA, "x")) if conf is not None else None, None)
    plugin = "pep" if svc.is_pep(r.host) else svc.opts.node_plugin
    svc.create(r.host, name, r.bare, config, plugin, r.now)
    if instant:
        out = _ps()
        etree.SubElement(out, q(PUBSUB, "create"), node=name)
        return out
    return None


# <subscriptions [node='N']/>
@operation("get", PUBSUB, "subscriptions", "optional", "none", "retrieve-subscriptions")
def subscriptions(r: Request):
    out = _ps()
    el = etree.SubElement(out, q(PUBSUB, "subscriptions"))
    nodes = [r.node] if r.node is not None else r.svc.tree_of(r.host).nodes(r.host)
    if r.node is not None:
        el.set("node", r.node.name)
    for n in nodes:
        for s in n.subscriptions.values():
            if _bare(s.jid) == r.bare:
                etree.SubElement(el, q(PUBSUB, "subscription"), node=n.name, jid=s.jid, subid=s.subid,
                                 subscription=s.state)
    return out


# <affiliations [node='N']/>
@operation("get", PUBSUB, "affiliations", "optional", "none", "retrieve-affiliations")
def affiliations(r: Request):
    out = _ps()
    el = etree.SubElement(out, q(PUBSUB, "affiliations"))
    nodes = [r.node] if r.node is not None else r.svc.tree_of(r.host).nodes(r.host)
    for n in nodes:
        aff = n.affiliation(r.bare)
        if aff != "none":
            etree.SubElement(el, q(PUBSUB, "affiliation"), node=n.name, affiliation=aff)
    return out


# ==================================================================== the reply
def handle(svc: PubsubService, host: str, session, iq: etree._Element, now: float, fetched: bool = False) -> bool:
    """A pubsub iq to `host`: answered (result or error), now or once the node's items are here;
    False if it is not a pubsub request."""
    r = request_of(svc, host, session, iq, now)
    if r is None:
        return False
    r.fetched = fetched
    try:
        payload = dispatch(r)
    except Failed as f:
        session.send(error_reply(iq, f))
        return True
    except Later:
        svc.fed.with_items(r.node, now, lambda t: handle(svc, host, session, iq, t, fetched=True))
        return True
    reply = element("iq", {"type": "result", "id": iq.get("id"), "from": iq.get("to"), "to": iq.get("from")})
    if payload is not None:
        reply.append(payload)
    session.send(reply)
    if r.after is not None:
        r.after()
    return True


def error_reply(iq: etree._Element, f: Failed) -> etree._Element:
    reply = element("iq", {"type": "error", "id": iq.get("id"), "from": iq.get("to"), "to": iq.get("from")})
    err = etree.SubElement(reply, C + "error", type=f.kind)
    etree.SubElement(err, q(xns.STANZA_ERRORS, f.condition), nsmap={None: xns.STANZA_ERRORS})
    if f.app:
        app = etree.SubElement(err, q(ERRORS, f.app), nsmap={None: ERRORS})
        if f.feature:
            app.set("feature", f.feature)
    return reply
