"""Stanza routing: one declarative table of narrow event names, dispatched once.

A stanza from a client is stamped with its full JID, passed through `user_send_packet`, and
named as Prosody names its events: `iq-get/host/urn:xmpp:ping:ping` (type, whom it is to,
payload namespace and name), `iq/full`, `message/bare`, `message/full`, `presence/initial`,
`presence/bare`... `to` is `host` (the domain), `self` (an iq to the sender's own bare JID
or without `to`), `bare` or `full`. The first name the table has wins; an unknown iq get/set
is `service-unavailable`. What a handler does not look at (receipts, markers, corrections,
reactions) passes through untouched: stanzas are relayed as parsed, only `from`/`to` change.

Other modules extend the table as Prosody's do: `module.hook("iq-get/host/vcard-temp:vCard", fn)`
(any narrow name above); `fn(StanzaReceived)` returning non-None has handled the stanza, and the
hooks of a name run before the table's own row. Services on their own domain (MUC at
`conference.<domain>`, PubSub at `pubsub.<domain>`) are `xmpp-host` items (`XmppHost`): every stanza
to that domain or a JID in it goes to the host's handler; they are listed in the domain's
disco#items. `xmpp-feature` items (strings) add to the domain's disco#info features,
`xmpp-account-feature` items to an account's, `xmpp-account-identity` items ((category, type)) to
its identities (PEP's pubsub/pep).

More hooks for the IM extensions (sm.py, csi.py, offline.py, carbons.py, mam.py, blocking.py):
`nonza/<namespace>` (XEP-0198/0352 elements outside jabber:client, `to` None, the session maybe not
bound yet); `message/offline` (a message with a body for an account with no resource anywhere:
non-None = stored, else `service-unavailable`); `message/delivering` (`Delivering`: a message about
to reach an account's resources here, to a bare or full JID; it may be changed, non-None = dropped).
`Router.out_filters` are the last step of every stanza to a client (`f(session, el, data)`, True = taken).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Callable

from lxml import etree

from relay import __version__
from relay.core.model import MESSAGE, MessageSent

from . import namespaces as ns
from .jid import Jid, JidError, parse_jid
from .roster import with_from, with_to
from .stanza import Outgoing, element

ROSTER = "jabber:iq:roster"
PING = "urn:xmpp:ping"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
VERSION = "jabber:iq:version"
SERVER_FEATURES = (DISCO_INFO, DISCO_ITEMS, PING, VERSION, ROSTER, "urn:xmpp:receipts")

C = "{%s}" % ns.CLIENT
_BODY, _SHOW, _STATUS, _PRIORITY = C + "body", C + "show", C + "status", C + "priority"
_SUBSCRIPTION_TYPES = ("subscribe", "subscribed", "unsubscribe", "unsubscribed")

ROUTES: dict[str, Callable] = {}


@dataclass(slots=True)
class StanzaReceived:
    """What a hook on a narrow stanza name gets: the client's session, the stanza (`from` stamped),
    the parsed `to` (the sender's bare JID where it had none), and the time."""

    router: "Router"
    session: Any
    stanza: etree._Element
    to: Jid
    now: float


@dataclass(slots=True)
class Delivering:
    """A message about to reach `sessions`, resources here of the account `to` (bare)."""

    router: "Router"
    to: Jid
    stanza: etree._Element
    sessions: list
    now: float


@dataclass(frozen=True, slots=True)
class XmppHost:
    """A service on its own domain (an `xmpp-host` item): `handler(session, stanza, to, now)` gets every
    client stanza to `domain` or a JID in it. `name`, `category` and `type` are its disco identity."""

    domain: str
    handler: Callable[[Any, etree._Element, Jid, float], None]
    name: str = ""
    category: str = "component"
    type: str = "generic"


def route(*names: str):
    def add(fn):
        for name in names:
            ROUTES[name] = fn
        return fn
    return add


def _q(namespace: str, name: str) -> str:
    return "{%s}%s" % (namespace, name)


class Router:
    def __init__(self, svc):
        self.svc = svc
        self.domain = svc.domain
        self.hooks = svc.core.hooks
        self.out_filters: list[Callable] = []       # f(session, el, data) -> True: taken (blocking, CSI)

    # ---------------------------------------------------------------- in
    def from_client(self, s, el: etree._Element, now: float) -> None:
        """The one dispatch of a client's stanza."""
        tag = el.tag
        if not tag.startswith(C):       # XEP-0198/0352 nonzas, to their namespace's hook
            self.hooks.run("nonza/" + tag[1:tag.index("}")], StanzaReceived(self, s, el, None, now))
            return
        el.set("from", str(s.jid))
        if self.hooks.has("user_send_packet"):
            el = self.hooks.fold("user_send_packet", el, s)
            if el is None:
                return
        s.member.user.last_active = now
        name = tag[len(C):]
        to_text = el.get("to")
        try:
            to = parse_jid(to_text) if to_text else None
        except JidError:
            self.error(s, el, "modify", "jid-malformed")
            return
        if to is None:
            kind = "self" if name == "iq" else "initial" if name == "presence" else "bare"
            to = s.jid.bare
        elif to.local is None and to.resource is None and to.domain == self.domain:
            kind = "host"
        elif to.domain != self.domain:
            host = self.host(to.domain)
            if host is not None:
                host.handler(s, el, to, now)
                return
            if self.to_component(to.domain, el):
                return
            if name != "presence":
                self.error(s, el, "cancel", "remote-server-not-found")
            return
        elif to.resource is None:
            kind = "self" if name == "iq" and to == s.jid.bare else "bare"
        else:
            kind = "full"
        hooks = self.hooks
        for event in self.names(name, el, kind):
            if hooks.has(event) and hooks.run(event, StanzaReceived(self, s, el, to, now)) is not None:
                return
            fn = ROUTES.get(event)
            if fn is not None:
                fn(self, s, el, to, now)
                return
        if name == "iq" and el.get("type") in ("get", "set"):
            self.error(s, el, "cancel", "service-unavailable")

    def from_component(self, c, el: etree._Element, now: float) -> None:
        """A component's stanza: from its own domain, to an account here or another component."""
        try:
            src = parse_jid(el.get("from") or "")
            to = parse_jid(el.get("to") or "")
        except JidError:
            c.stream_error("improper-addressing" if not el.get("to") else "invalid-from")
            return
        if src.domain != c.domain:
            c.stream_error("invalid-from", f"{src.domain} is not {c.domain}")
            return
        if to.domain != self.domain and self.to_component(to.domain, el):
            return
        name = etree.QName(el).localname
        if to.domain != self.domain or to.local is None:
            return
        if to.resource is not None:
            target = self.session(to)
            if target is not None:
                target.send(el)
            else:
                self.svc.federation.route(el, now)      # a resource on another server
            return
        if name == "message":
            self.svc.federation.message_to_bare(to.bare, el, now)
        elif name == "presence":
            out = Outgoing(el)
            for x in self.sessions_of(to.bare):
                if x.interested:
                    x.send_bytes_of(out)
            self.svc.federation.to_accounts(el, [to.bare])

    def to_component(self, domain: str, el: etree._Element) -> bool:
        """`el` to the component that holds `domain`, here or on another server; False if none does."""
        component = self.svc.components.get(domain)
        if component is not None:
            component.send(el)
            return True
        sid = self.svc.component_domains.server_of(domain)
        return sid is not None and self.svc.federation.send(el, {sid})

    def host(self, domain: str) -> XmppHost | None:
        for h in self.svc.core.items.get("xmpp-host"):
            if h.domain == domain:
                return h
        return None

    def features(self, key: str = "xmpp-feature") -> list[str]:
        return list(self.svc.core.items.get(key))

    @staticmethod
    def names(name: str, el: etree._Element, kind: str) -> list[str]:
        if name == "iq":
            typ = el.get("type")
            if typ in ("get", "set") and len(el) == 1:
                q = etree.QName(el[0])
                return [f"iq-{typ}/{kind}/{q.namespace}:{q.localname}", f"iq/{kind}"]
            return [f"iq/{kind}"]
        return [f"{name}/{kind}"]

    # ---------------------------------------------------------------- out
    def sessions_of(self, bare: Jid) -> list:
        acct = self.svc.accounts.get(bare)
        return list(acct.resources.values()) if acct is not None else []

    def session(self, full: Jid):
        """The session of a full JID bound here, or None."""
        acct = self.svc.accounts.get(full.bare)
        return acct.resources.get(full.resource) if acct is not None else None

    def deliver(self, el: etree._Element, now: float) -> bool:
        """A stanza from a service here (`from` set) to its `to`: a full JID's session, or a bare JID's
        resources as a message is (presence: every interested resource); False if no one here has it."""
        try:
            to = parse_jid(el.get("to") or "")
        except JidError:
            return False
        if to.domain != self.domain or to.local is None:
            return False
        if to.resource is not None:
            target = next((x for x in self.sessions_of(to.bare) if x.jid == to), None)
            if target is None:
                return False
            target.send(el)
            return True
        if etree.QName(el).localname == "presence":
            out, sent = Outgoing(el), False
            for x in self.sessions_of(to.bare):
                if x.interested:
                    x.send_bytes_of(out)
                    sent = True
            return sent
        return self.to_bare(to.bare, el, now)

    def to_full(self, s, el: etree._Element) -> None:
        """`el` to session `s` (its own `to`)."""
        el.set("to", str(s.jid))
        s.send(el)

    def to_bare(self, bare: Jid, el: etree._Element, now: float) -> bool:
        """A message to an account here: its highest-priority available resources (RFC 6121 §8.5.2),
        else every bound resource; False when the account has none here."""
        sessions = self.sessions_of(bare)
        if not sessions:
            return False
        available = [x for x in sessions if x.presence is not None and x.priority >= 0]
        if available:
            top = max(x.priority for x in available)
            sessions = [x for x in available if x.priority == top]
        self.deliver_to(bare, el, sessions, now)
        return True

    def deliver_to(self, bare: Jid, el: etree._Element, sessions: list, now: float) -> None:
        """A message to resources here of account `bare`: `message/delivering` (carbons, the archive,
        blocking) may take it over; else it is serialised once for all of them."""
        if self.hooks.has("message/delivering") and \
                self.hooks.run("message/delivering", Delivering(self, bare, el, sessions, now)) is not None:
            return
        out = Outgoing(el)
        for x in sessions:
            x.send_bytes_of(out)

    def error(self, s, el: etree._Element, kind: str, condition: str) -> None:
        """The stanza error reply to `el` (never to an error)."""
        if el.get("type") == "error":
            return
        reply = element(etree.QName(el).localname, {"type": "error", "id": el.get("id"),
                                                    "from": el.get("to") or self.domain})
        err = etree.SubElement(reply, C + "error", type=kind)
        etree.SubElement(err, _q(ns.STANZA_ERRORS, condition), nsmap={None: ns.STANZA_ERRORS})
        self.to_full(s, reply)

    def result(self, s, iq: etree._Element, payload: etree._Element | None = None) -> None:
        reply = element("iq", {"type": "result", "id": iq.get("id"), "from": iq.get("to")})
        if payload is not None:
            reply.append(payload)
        self.to_full(s, reply)

    # ---------------------------------------------------------------- messages
    def deliver_message(self, s, el: etree._Element, to: Jid, now: float) -> None:
        """A message to a bare JID: an XMPP account with resources anywhere in the network (as a stanza),
        else the network user `nick@domain` (another protocol's: a direct message)."""
        fed, bare = self.svc.federation, to.bare
        body = el.findtext(_BODY)
        if fed.online(bare):
            el = self.chat_filtered(s, el, bare, now)
            if el is not None and not fed.message_to_bare(bare, el, now):
                self.error(s, el, "cancel", "service-unavailable")
            return
        target = self.svc.network_user(bare)
        chat = body is not None and el.get("type") in (None, "chat", "normal")
        if target is not None and target.proto != "xmpp" and chat:
            self.svc.net.message(s.member.user, target, MESSAGE, body, now)
            return
        if target is None and chat and \
                self.hooks.run("message/offline", StanzaReceived(self, s, el, bare, now)) is not None:
            return                                  # an account with no resource anywhere: stored
        self.error(s, el, "cancel", "service-unavailable")

    def chat_filtered(self, s, el: etree._Element, bare: Jid, now: float):
        """`el`, or what filter_packet made of it, when it is a chat with a body to an XMPP account."""
        body = el.findtext(_BODY)
        if body is None or el.get("type") not in (None, "chat", "normal") or not self.hooks.has("filter_packet"):
            return el
        target = self.svc.federation.user_of(bare)
        return el if target is None else self.filtered(s, el, target, body, now)

    def filtered(self, s, el: etree._Element, target, body: str, now: float):
        """filter_packet on a chat between two XMPP accounts, as net.message runs it for others."""
        if not self.hooks.has("filter_packet"):
            return el
        net = self.svc.net
        ev = self.hooks.fold("filter_packet", MessageSent(now, s.member.user, target, MESSAGE, body, {},
                                                          net.new_msgid()))
        if ev is None:
            return None
        if ev.text != body:
            el.find(_BODY).text = ev.text
        return el

    # ---------------------------------------------------------------- presence
    def subscribers(self, account: str) -> list[str]:
        return [c for c, item in self.svc.roster.items(account).items() if item["subscription"] in ("from", "both")]

    def contacts(self, account: str) -> list[Jid]:
        """What `account` subscribes to (to, both)."""
        return [b for c, item in self.svc.roster.items(account).items()
                if item["subscription"] in ("to", "both") and (b := _bare(c)) is not None]

    def broadcast(self, s, el: etree._Element, now: float) -> None:
        """`s`'s presence to its subscribers' resources and to its own other resources, here and on
        the other servers that have some (one frame)."""
        subscribers = [b for c in self.subscribers(s.account) if (b := _bare(c)) is not None]
        self.svc.federation.broadcast(s, el, subscribers)
        out = Outgoing(el)
        targets = [x for b in subscribers for x in self.sessions_of(b)]
        targets += [x for x in self.sessions_of(s.jid.bare) if x is not s]
        for x in targets:
            if x.interested:
                x.send_bytes_of(out)

    def went_offline(self, s, now: float) -> None:
        s.presence = None
        s.interested = False
        self.broadcast(s, element("presence", {"type": "unavailable", "from": str(s.jid)}), now)

    def probe(self, s) -> None:
        """The presence of what `s` subscribes to, on its initial presence (one probe frame for the
        contacts on other servers; they answer with their resources' presence)."""
        acct = s.account
        contacts = [c for c, item in self.svc.roster.items(acct).items() if item["subscription"] in ("to", "both")]
        self.svc.federation.probe(s, self.contacts(acct))
        for x in self.sessions_of(s.jid.bare):
            if x is not s and x.presence is not None:
                self.to_full(s, _copy(x.presence))
        for c in contacts:
            bare = _bare(c)
            if bare is None:
                continue
            for x in self.sessions_of(bare):
                if x.presence is not None:
                    self.to_full(s, _copy(x.presence))
            if not self.svc.federation.online(bare):
                u = self.svc.network_user(bare)
                if u is not None and u.proto != "xmpp":
                    self.to_full(s, self.user_presence(u))

    def user_presence(self, u) -> etree._Element:
        """Another protocol's user as XMPP presence (IRC away is `away`)."""
        p = element("presence", {"from": f"{self.svc.jid_of(u)}/{u.proto}"})
        if u.away:
            etree.SubElement(p, _SHOW).text = "away"
            etree.SubElement(p, _STATUS).text = u.away
        return p

    def push(self, account: str, contact: str) -> None:
        """A roster push of one item to the account's resources that asked for the roster."""
        item = self.svc.roster.item(account, contact)
        for x in self.sessions_of(Jid(account, self.domain)):
            if x.roster_requested:
                iq = element("iq", {"type": "set", "id": "push-" + secrets.token_hex(4)})
                q = etree.SubElement(iq, _q(ROSTER, "query"), nsmap={None: ROSTER},
                                     ver=self.svc.roster.version(account))
                q.append(_item(contact, item or {"subscription": "remove"}))
                self.to_full(x, iq)


def _bare(text: str) -> Jid | None:
    try:
        return parse_jid(text).bare
    except JidError:
        return None



def _copy(el: etree._Element) -> etree._Element:
    out = etree.fromstring(etree.tostring(el))
    return out


def _item(contact: str, item: dict) -> etree._Element:
    el = etree.Element(_q(ROSTER, "item"), jid=contact, subscription=item["subscription"])
    if item.get("name"):
        el.set("name", item["name"])
    if item.get("ask"):
        el.set("ask", item["ask"])
    for g in item.get("groups") or ():
        etree.SubElement(el, _q(ROSTER, "group")).text = g
    return el


# ==================================================================== the table
# <iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>
@route(f"iq-get/host/{PING}:ping", f"iq-get/self/{PING}:ping")
def ping(r: Router, s, el, to, now):
    r.result(s, el)


# <iq type='get' to='domain'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>
@route(f"iq-get/host/{DISCO_INFO}:query")
def disco_info(r: Router, s, el, to, now):
    q = etree.Element(_q(DISCO_INFO, "query"), nsmap={None: DISCO_INFO})
    if el[0].get("node"):
        q.set("node", el[0].get("node"))
    etree.SubElement(q, _q(DISCO_INFO, "identity"), category="server", type="im", name="relaynet")
    for f in (*SERVER_FEATURES, *r.features()):
        etree.SubElement(q, _q(DISCO_INFO, "feature"), var=f)
    r.result(s, el, q)


# <iq type='get' [to='own bare']><query xmlns='http://jabber.org/protocol/disco#info'/></iq>
@route(f"iq-get/self/{DISCO_INFO}:query")
def disco_info_account(r: Router, s, el, to, now):
    q = etree.Element(_q(DISCO_INFO, "query"), nsmap={None: DISCO_INFO})
    etree.SubElement(q, _q(DISCO_INFO, "identity"), category="account", type="registered")
    for category, typ in r.features("xmpp-account-identity"):
        etree.SubElement(q, _q(DISCO_INFO, "identity"), category=category, type=typ)
    for f in (DISCO_INFO, *r.features("xmpp-account-feature")):
        etree.SubElement(q, _q(DISCO_INFO, "feature"), var=f)
    r.result(s, el, q)


# <iq type='get' to='domain'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>
@route(f"iq-get/host/{DISCO_ITEMS}:query")
def disco_items(r: Router, s, el, to, now):
    q = etree.Element(_q(DISCO_ITEMS, "query"), nsmap={None: DISCO_ITEMS})
    if not el[0].get("node"):
        for h in r.svc.core.items.get("xmpp-host"):
            etree.SubElement(q, _q(DISCO_ITEMS, "item"), jid=h.domain, **({"name": h.name} if h.name else {}))
    r.result(s, el, q)


@route(f"iq-get/self/{DISCO_ITEMS}:query")
def disco_items_account(r: Router, s, el, to, now):
    r.result(s, el, etree.Element(_q(DISCO_ITEMS, "query"), nsmap={None: DISCO_ITEMS}))


# <iq type='get' to='domain'><query xmlns='jabber:iq:version'/></iq>
@route(f"iq-get/host/{VERSION}:query")
def version(r: Router, s, el, to, now):
    q = etree.Element(_q(VERSION, "query"), nsmap={None: VERSION})
    etree.SubElement(q, _q(VERSION, "name")).text = "relaynet"
    etree.SubElement(q, _q(VERSION, "version")).text = __version__
    r.result(s, el, q)


# <iq type='get'><query xmlns='jabber:iq:roster' [ver='V']/></iq>
@route(f"iq-get/self/{ROSTER}:query")
def roster_get(r: Router, s, el, to, now):
    s.roster_requested = True
    store = r.svc.roster
    ver = store.version(s.account)
    if el[0].get("ver") == ver:
        r.result(s, el)                             # XEP-0237 §2.4: unchanged, pushes follow
        return
    q = etree.Element(_q(ROSTER, "query"), nsmap={None: ROSTER}, ver=ver)
    for contact, item in store.items(s.account).items():
        q.append(_item(contact, item))
    r.result(s, el, q)


# <iq type='set'><query xmlns='jabber:iq:roster'><item jid='J' [name='N'] [subscription='remove']>
#   <group>G</group>...</item></query></iq>
@route(f"iq-set/self/{ROSTER}:query")
def roster_set(r: Router, s, el, to, now):
    items = el[0].findall(_q(ROSTER, "item"))
    contact = _bare(items[0].get("jid", "")) if len(items) == 1 else None
    if contact is None or contact == s.jid.bare:
        r.error(s, el, "modify", "bad-request")
        return
    store, acct, c = r.svc.roster, s.account, str(contact)
    if items[0].get("subscription") == "remove":
        old = store.item(acct, c)
        if old is None:
            r.error(s, el, "cancel", "item-not-found")
            return
        store.remove(acct, c, now)
        r.result(s, el)
        r.push(acct, c)
        if old["subscription"] in ("to", "both") or old.get("ask"):
            subscription(r, s, element("presence", {"type": "unsubscribe", "from": str(s.jid)}), contact, now)
        if old["subscription"] in ("from", "both"):
            subscription(r, s, element("presence", {"type": "unsubscribed", "from": str(s.jid)}), contact, now)
        return
    groups = [g.text for g in items[0].findall(_q(ROSTER, "group")) if g.text]
    store.put(acct, c, now, name=items[0].get("name"), groups=groups)
    r.result(s, el)
    r.push(acct, c)


@route("iq/full")
def iq_to_full(r: Router, s, el, to, now):
    target = r.session(to)
    if target is not None:
        target.send(el)
    elif not r.svc.federation.route(el, now):       # a resource on another server, else none
        r.error(s, el, "cancel", "service-unavailable")


@route("message/bare")
def message_bare(r: Router, s, el, to, now):
    r.deliver_message(s, el, to, now)


@route("message/full")
def message_full(r: Router, s, el, to, now):
    fed = r.svc.federation
    target = r.session(to)
    if target is not None or fed.server_of(to) is not None:
        el = r.chat_filtered(s, el, to.bare, now)
        if el is None:
            return
        if target is not None:
            r.deliver_to(to.bare, el, [target], now)
        else:
            fed.route(el, now)                      # the resource is on another server
    elif el.get("type") in (None, "chat", "normal"):
        r.deliver_message(s, el, to.bare, now)     # RFC 6121 §8.5.3.2.1: as if to the bare JID
    else:
        r.error(s, el, "cancel", "service-unavailable")


@route("message/host")
def message_host(r: Router, s, el, to, now):
    pass                                            # nothing here takes messages to the domain


# <presence [type='unavailable']><show/><status/><priority/></presence>, no `to`
@route("presence/initial")
def presence_initial(r: Router, s, el, to, now):
    typ = el.get("type")
    if typ == "unavailable":
        r.went_offline(s, now)
        r.svc.federation.announce(s.member, now)    # the resource is not available: the map says so
        return
    if typ is not None:
        return                                      # subscription stanzas need a `to`
    first = not s.interested
    try:
        s.priority = max(-128, min(127, int(el.findtext(_PRIORITY) or 0)))
    except ValueError:
        s.priority = 0
    s.presence, s.interested = el, True
    r.svc.federation.announce(s.member, now)        # its priority, before the stanzas it causes
    r.broadcast(s, el, now)
    if first:
        r.probe(s)
    show = el.findtext(_SHOW)
    away = (el.findtext(_STATUS) or show or "away") if show in ("away", "xa", "dnd") else None
    u = s.member.user
    if u.away != away:
        u.away = away[: r.svc.core.config.network.awaylen] if away else None
        r.svc.net.update_user(u, "away", now)


@route("presence/bare", "presence/full")
def presence_to(r: Router, s, el, to, now):
    typ = el.get("type")
    if typ in _SUBSCRIPTION_TYPES:
        el.set("from", str(s.jid.bare))
        subscription(r, s, el, to.bare, now)
    elif typ == "probe":
        fed = r.svc.federation
        fed.answer_probe(s.jid, to.bare, now)       # the resources here; those elsewhere answer themselves
        fed.send(el, fed.servers_of(to.bare))
    elif typ in (None, "unavailable"):               # directed presence
        fed = r.svc.federation
        if to.resource is None:
            targets = r.sessions_of(to.bare)
            fed.send(el, fed.servers_of(to.bare))
        else:
            targets = [x for x in (r.session(to),) if x is not None]
            if not targets and fed.server_of(to) is not None:
                fed.send(el, {fed.server_of(to)})
        out = Outgoing(el)
        for x in targets:
            x.send_bytes_of(out)


def subscription(r: Router, s, el, contact: Jid, now: float) -> None:
    """RFC 6121 §3: the user's and the contact's roster items change, both are pushed, the stanza goes on
    (rosters are network-wide: the contact's server pushes its resources the change it receives)."""
    store, me, c, typ = r.svc.roster, s.account, str(contact), el.get("type")
    my = store.item(me, c) or {"subscription": "none", "ask": None}
    local = contact.domain == r.domain and contact.local is not None
    contact_acct = contact.local if local else None
    theirs = store.item(contact_acct, str(s.jid.bare)) if contact_acct else None
    if typ == "subscribe":
        store.put(me, c, now, ask="subscribe")
    elif typ == "subscribed":
        store.put(me, c, now, subscription=with_from(my["subscription"], True))
        if theirs is not None or contact_acct:
            t = theirs or {"subscription": "none"}
            store.put(contact_acct, str(s.jid.bare), now, subscription=with_to(t["subscription"], True), ask=None)
    elif typ == "unsubscribe":
        store.put(me, c, now, subscription=with_to(my["subscription"], False), ask=None)
        if theirs is not None:
            store.put(contact_acct, str(s.jid.bare), now, subscription=with_from(theirs["subscription"], False))
    elif typ == "unsubscribed":
        store.put(me, c, now, subscription=with_from(my["subscription"], False))
        if theirs is not None:
            store.put(contact_acct, str(s.jid.bare), now, subscription=with_to(theirs["subscription"], False),
                      ask=None)
    if store.item(me, c) is not None:
        r.push(me, c)
    if contact_acct and store.item(contact_acct, str(s.jid.bare)) is not None and typ != "subscribe":
        r.push(contact_acct, str(s.jid.bare))
    el.set("to", c)
    fed = r.svc.federation
    fed.send(el, fed.servers_of(contact))           # the contact's resources on other servers
    sessions = r.sessions_of(contact)
    out = Outgoing(el)
    for x in sessions:
        if x.interested or x.roster_requested:
            x.send_bytes_of(out)
    if typ == "subscribed":
        for mine in r.sessions_of(s.jid.bare):      # the new subscriber gets our presence at once
            if mine.presence is not None:
                fed.to_accounts(mine.presence, [contact])
                for x in r.sessions_of(contact):
                    r.to_full(x, _copy(mine.presence))
    elif typ == "unsubscribed":
        gone = element("presence", {"type": "unavailable", "from": str(s.jid.bare)})
        fed.to_accounts(gone, [contact])
        for x in sessions:
            r.to_full(x, gone)
    elif typ == "subscribe" and not fed.online(contact) and r.svc.network_user(contact) is not None \
            and r.svc.network_user(contact).proto != "xmpp":
        # Another protocol's user cannot answer: it is approved, and its presence follows.
        u = r.svc.network_user(contact)
        store.put(me, c, now, subscription=with_to(store.item(me, c)["subscription"], True), ask=None)
        r.push(me, c)
        r.to_full(s, element("presence", {"type": "subscribed", "from": c}))
        r.to_full(s, r.user_presence(u))
