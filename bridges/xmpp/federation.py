"""One XMPP network across the tree: rosters on every server, stanzas to the servers with the resources.

Where an account's resources are: on each server where the account has bound resources it is one
network user, and that user's attrs carry them, `{"xmpp": {"jid", "resource", "resources":
{resource: priority, or None while not available}}}`. So the link layer's UID and UPDATE frames
announce the map, the netsplit module holds it through a short split, and a burst brings it back.

Frames (module frames in ENCAP: numbered, replayed after a short split, deduplicated):

    XMPP_STANZA  {xml, [to: [bare JID...]]}
        a stanza, re-serialised from the parsed tree, to exactly the servers that have resources of
        its recipient (or the component of its domain, component_net.py). Without `to` the stanza's own `to` addresses it; with `to` (presence
        broadcasts and probes) every listed account's resources on that server get it: once per
        server, whatever the number of resources and recipients there.
        A message to a bare JID that goes to several servers carries `mark: [id, time]`, the archive
        id and time every server archiving it uses (mam.py).
    XMPP_ROSTER  {account, contact, item | null, stamp: [time, server]}
        one roster change (null: removed), to every server.
    XMPP_ROSTER_VERSIONS {versions: {account: version}}
        on link-up, to the peer: the versions of every roster this server has.
    XMPP_ROSTERS {entries: [[account, contact, item | null, stamp], ...]}
        the answer: every item and tombstone of the rosters whose versions differ. The receiver keeps
        what is newer and passes on, as XMPP_ROSTER frames, what it took.
    XMPP_RESTORE {servers: [id...]}
        after a netjoin, to the servers on this side: send the presence of your resources to their
        subscribers on the servers that came back (who may have seen them go unavailable when the
        split-hold expired).

Presence of resources behind a split: held with their users, and told unavailable to the
subscribers here only when the hold expires (their users quit from a server no longer in the tree).
"""

from __future__ import annotations

import logging
from typing import Iterable

from lxml import etree

from relay.core.model import User

from . import namespaces as ns
from .jid import Jid, JidError, parse_jid
from .roster import clean_item, clean_stamp
from .stanza import Outgoing, element, serialise

log = logging.getLogger("relay.xmpp")

STANZA, ROSTER, VERSIONS, ROSTERS, RESTORE = ("XMPP_STANZA", "XMPP_ROSTER", "XMPP_ROSTER_VERSIONS",
                                              "XMPP_ROSTERS", "XMPP_RESTORE")
FRAMES = (STANZA, ROSTER, VERSIONS, ROSTERS, RESTORE)
CHUNK = 500                        # roster entries per XMPP_ROSTERS frame

C = "{%s}" % ns.CLIENT
_STANZAS = (C + "message", C + "presence", C + "iq")
_SUBSCRIPTION_TYPES = ("subscribe", "subscribed", "unsubscribe", "unsubscribed")

# What a peer sends was parsed and re-serialised there; parse it as strictly anyway.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, remove_pis=True,
                          remove_comments=True, huge_tree=False)


def full_of(text) -> Jid | None:
    try:
        return parse_jid(text) if isinstance(text, str) and text else None
    except JidError:
        return None


def bare_of(text) -> Jid | None:
    try:
        return parse_jid(text).bare if isinstance(text, str) and text else None
    except JidError:
        return None


def resources_attr(u: User) -> dict:
    """A network user's XMPP resources: {resource: priority, or None while not available}."""
    a = u.attrs.get("xmpp")
    if not isinstance(a, dict):
        return {}
    res = a.get("resources")
    if isinstance(res, dict):
        return {r: (p if isinstance(p, int) and not isinstance(p, bool) else None)
                for r, p in res.items() if isinstance(r, str)}
    r = a.get("resource")                       # a server without the map: its first resource only
    return {r: None} if isinstance(r, str) else {}


class XmppFederation:
    def __init__(self, svc, module):
        self.svc, self.core, self.net = svc, svc.core, svc.net
        self.remote: dict[Jid, dict[str, User]] = {}   # bare JID -> uid -> its user on another server
        self.bare_of_uid: dict[str, Jid] = {}
        self.stats = {"stanzas_out": 0, "stanzas_in": 0, "stanzas_refused": 0, "roster_in": 0}
        self.new_mark = None        # now -> (archive id, time): set by mam.py
        self.mark = None            # the mark of the message being delivered, while it is
        for u in list(self.net.users.values()):
            self._user_came(u)
        svc.roster.changed = self.roster_changed
        module.hook("link_extension", self.on_frame)
        module.hook("link_up", self.link_up)
        module.hook("netjoin", self.netjoin)
        module.hook("client_connected", self._user_came)
        module.hook("client_disconnected", self._user_left)

    @property
    def links(self):
        return getattr(self.net, "router", None)

    # ---------------------------------------------------------------- the resource map
    def _user_came(self, u: User) -> None:
        if u.session is None and u.proto == "xmpp":
            bare = bare_of(u.attrs.get("xmpp", {}).get("jid")) if isinstance(u.attrs.get("xmpp"), dict) else None
            if bare is not None:
                self.remote.setdefault(bare, {})[u.uid] = u
                self.bare_of_uid[u.uid] = bare

    def _user_left(self, u: User, reason: str) -> None:
        bare = self.bare_of_uid.pop(u.uid, None)
        if bare is None:
            return
        users = self.remote.get(bare, {})
        users.pop(u.uid, None)
        if not users:
            self.remote.pop(bare, None)
        links = self.links
        if links is not None and u.server not in links.tree:
            self._held_expired(bare, u)           # the split-hold ended: its resources are gone

    def remote_resources(self, bare: Jid) -> Iterable[tuple[str, str, int | None]]:
        """(server id, resource, priority or None) of `bare`'s resources on other servers."""
        for u in self.remote.get(bare, {}).values():
            for r, p in resources_attr(u).items():
                yield u.server, r, p

    def servers_of(self, bare: Jid) -> set[str]:
        return {u.server for u in self.remote.get(bare, {}).values()}

    def server_of(self, full: Jid) -> str | None:
        for u in self.remote.get(full.bare, {}).values():
            if full.resource in resources_attr(u):
                return u.server
        return None

    def user_of(self, bare: Jid) -> User | None:
        """A network user of the account (here first): the target of filter_packet."""
        acct = self.svc.accounts.get(bare)
        if acct is not None and acct.user is not None:
            return acct.user
        return next(iter(self.remote.get(bare, {}).values()), None)

    def online(self, bare: Jid) -> bool:
        """Has the account a bound resource anywhere in the network?"""
        return bare in self.svc.accounts or bool(self.remote.get(bare))

    def announce(self, acct, now: float) -> None:
        """The account's resources here (and their priorities) into its network user's attrs."""
        u = acct.user
        if u is None or not acct.resources:
            return
        attrs = self.attrs_of(acct)
        if u.attrs.get("xmpp") != attrs:
            self.net.set_attrs(u, "xmpp", attrs, now)

    @staticmethod
    def attrs_of(acct) -> dict:
        first = next(iter(acct.resources.values()))
        return {"jid": str(first.jid), "resource": first.jid.resource,
                "resources": {r: (x.priority if x.presence is not None else None) for r, x in acct.resources.items()}}

    # ---------------------------------------------------------------- sending
    def send(self, el: etree._Element, servers: set[str], to: Iterable[str] | None = None, mark=None) -> bool:
        """`el` to `servers` as one frame (crossing each link once); False if there is no one to send to."""
        links = self.links
        servers = set(servers) - {self.core.config.server.id}
        if links is None or not servers:
            return False
        # A component's stanza is in its stream's namespace: it crosses as jabber:client.
        xml = etree.tostring(el, encoding="unicode") if el.tag.startswith(C) else \
            serialise(el, ns.CLIENT, websocket=True).decode("utf-8")
        if len(xml) * 2 + 4096 > links.codec.max_frame:
            log.warning("XMPP stanza of %d characters too large for a link frame; not sent", len(xml))
            return False
        payload = {"xml": xml}
        if to is not None:
            payload["to"] = sorted(set(to))
        if mark is not None:
            payload["mark"] = list(mark)
        self.stats["stanzas_out"] += 1
        links.send_extension(STANZA, payload, servers)
        return True

    def route(self, el: etree._Element, now: float) -> bool:
        """A stanza the server sends (`from` and `to` set) to an account anywhere; False if nobody has it."""
        try:
            to = parse_jid(el.get("to") or "")
        except JidError:
            return False
        if to.domain != self.svc.domain or to.local is None:
            return False
        r = self.svc.router
        if to.resource is not None:
            target = r.session(to)
            if target is not None:
                target.send(el)
                return True
            sid = self.server_of(to)
            return sid is not None and self.send(el, {sid})
        if etree.QName(el).localname == "message":
            return self.message_to_bare(to, el, now)
        sent = self.send(el, self.servers_of(to))
        out = Outgoing(el)
        for x in r.sessions_of(to):
            x.send_bytes_of(out)
            sent = True
        return sent

    def message_to_bare(self, bare: Jid, el: etree._Element, now: float) -> bool:
        """RFC 6121 §8.5.2 over the whole network: the highest-priority available resources wherever
        they are (else every bound resource); one frame to the servers that have them."""
        local = self.svc.router.sessions_of(bare)
        cands = [(x.priority if x.presence is not None else None, None, x) for x in local]
        cands += [(p, sid, None) for sid, _, p in self.remote_resources(bare)]
        if not cands:
            return False
        available = [c for c in cands if c[0] is not None and c[0] >= 0]
        if available:
            top = max(c[0] for c in available)
            cands = [c for c in available if c[0] == top]
        servers = {c[1] for c in cands if c[1] is not None}
        here = [x for _, _, x in cands if x is not None]
        mark = self.new_mark(now) if self.new_mark is not None and (len(servers) > 1 or servers and here) \
            and el.find(C + "body") is not None else None      # archived on several servers: one id
        if servers:
            self.send(el, servers, mark=mark)
        if here:
            self.mark = mark
            try:
                self.svc.router.deliver_to(bare, el, here, now)
            finally:
                self.mark = None
        return True

    def to_accounts(self, el: etree._Element, bares: Iterable[Jid], servers: set[str] | None = None) -> None:
        """A presence to the interested resources of `bares` on other servers (restricted to `servers`)."""
        to, where = [], set()
        for bare in bares:
            s = self.servers_of(bare)
            if servers is not None:
                s &= servers
            if s:
                where |= s
                to.append(str(bare))
        if where:
            self.send(el, where, to)

    # ---------------------------------------------------------------- stanzas in
    def deliver_here(self, el: etree._Element, to: list[Jid] | None, now: float) -> None:
        """A stanza from another server (XMPP_STANZA) to the resources here.

        `to`: the accounts of a presence broadcast or a probe; else the stanza's own `to` addresses it."""
        name, typ = etree.QName(el).localname, el.get("type")
        r = self.svc.router
        if to is not None:
            if name != "presence":
                return
            if typ == "probe":
                prober = full_of(el.get("from"))
                for bare in to:
                    if prober is not None:
                        self.answer_probe(prober, bare, now)
                return
            out = Outgoing(el)
            for bare in to:
                for x in r.sessions_of(bare):
                    if x.interested:
                        x.send_bytes_of(out)
            return
        target = full_of(el.get("to"))
        if target is None:
            return
        if target.domain != self.svc.domain:
            component = self.svc.components.get(target.domain)
            if component is not None:
                component.send(el)
            else:
                self.bounce(el, now)                # the component left while the stanza was on its way
            return
        if target.local is None:
            return
        if name == "message":
            if target.resource is not None:
                x = r.session(target)
                if x is not None:
                    r.deliver_to(target.bare, el, [x], now)
                    return
                if typ not in (None, "chat", "normal"):
                    return self.bounce(el, now)
            if not r.to_bare(target.bare, el, now):
                self.bounce(el, now)
        elif name == "iq":
            x = r.session(target) if target.resource is not None else None
            if x is not None:
                x.send(el)
            elif typ in ("get", "set"):
                self.bounce(el, now)
        elif typ in _SUBSCRIPTION_TYPES:
            out = Outgoing(el)
            for x in r.sessions_of(target.bare):
                if x.interested or x.roster_requested:
                    x.send_bytes_of(out)
        elif typ == "probe":
            prober = full_of(el.get("from"))
            if prober is not None:
                self.answer_probe(prober, target.bare, now)
        elif typ in (None, "unavailable"):
            targets = r.sessions_of(target.bare) if target.resource is None else \
                [x for x in (r.session(target),) if x is not None]
            out = Outgoing(el)
            for x in targets:
                x.send_bytes_of(out)

    def bounce(self, el: etree._Element, now: float) -> None:
        """The error reply to a stanza from another server that no resource here could take, sent back."""
        if el.get("type") in ("error", "result", "groupchat", "headline") or etree.QName(el).localname == "presence":
            return
        reply = element(etree.QName(el).localname, {"type": "error", "id": el.get("id"), "from": el.get("to"),
                                                    "to": el.get("from")})
        err = etree.SubElement(reply, C + "error", type="cancel")
        etree.SubElement(err, "{%s}service-unavailable" % ns.STANZA_ERRORS, nsmap={None: ns.STANZA_ERRORS})
        self.route(reply, now)

    # ---------------------------------------------------------------- presence
    def broadcast(self, s, el: etree._Element, subscribers: list[Jid], servers: set[str] | None = None) -> None:
        """`s`'s presence to its subscribers and its own account's resources on other servers."""
        self.to_accounts(el, [*subscribers, s.jid.bare], servers)

    def probe(self, s, contacts: list[Jid], servers: set[str] | None = None) -> None:
        """One probe frame for `s`'s contacts (and its own account) with resources on other servers."""
        p = element("presence", {"type": "probe", "from": str(s.jid)})
        self.to_accounts(p, [*contacts, s.jid.bare], servers)

    def answer_probe(self, prober: Jid, contact: Jid, now: float) -> None:
        """A probe from `prober` (a full JID) of `contact`, an account with resources here."""
        if prober.bare != contact:
            item = self.svc.roster.item(contact.local, str(prober.bare))
            if item is None or item["subscription"] not in ("from", "both"):
                return
        for x in self.svc.router.sessions_of(contact):
            if x.presence is not None and x.jid != prober:
                p = etree.fromstring(etree.tostring(x.presence))
                p.set("to", str(prober))
                self.route(p, now)

    def _held_expired(self, bare: Jid, u: User) -> None:
        """The user of `bare` on a server split off for longer than the hold quit: its available
        resources are unavailable to the subscribers and own resources here."""
        gone = [r for r, p in resources_attr(u).items() if p is not None]
        if not gone:
            return
        r = self.svc.router
        targets = [x for c in r.subscribers(bare.local) if (b := bare_of(c)) is not None for x in r.sessions_of(b)]
        targets += r.sessions_of(bare)
        for res in gone:
            out = Outgoing(element("presence", {"type": "unavailable", "from": f"{bare}/{res}"}))
            for x in targets:
                if x.interested:
                    x.send_bytes_of(out)

    def netjoin(self, peer_id: str) -> None:
        """A peer's burst is in: presence between this side and the servers that came back is restored."""
        links = self.links
        if links is None:
            return
        tree, me = links.tree, self.core.config.server.id
        back = {x for x in tree.servers() if x == peer_id or tree.link_of(x) == peer_id}
        here = set(tree.servers()) - back - {me}
        if here:
            links.send_extension(RESTORE, {"servers": sorted(back)}, here)
        self.restore(back)

    def restore(self, servers: set[str]) -> None:
        """The presence of the resources here to their subscribers on `servers`. Every server on both
        sides does it for its own resources, so presence is restored both ways without probes."""
        r = self.svc.router
        for acct in list(self.svc.accounts.values()):
            for s in list(acct.resources.values()):
                if s.interested and s.presence is not None:
                    self.broadcast(s, s.presence, [b for c in r.subscribers(s.account) if (b := bare_of(c))],
                                   servers)

    # ---------------------------------------------------------------- rosters
    def roster_changed(self, account: str, contact: str, item: dict | None, stamp) -> None:
        links = self.links
        if links is not None and links.peers:
            links.send_extension(ROSTER, {"account": account, "contact": contact, "item": item,
                                          "stamp": list(stamp)})

    def link_up(self, peer_id: str) -> None:
        store, links = self.svc.roster, self.links
        versions = {a: store.version(a) for a in store.accounts()}
        if links is not None:
            links.send_extension(VERSIONS, {"versions": versions}, {peer_id})

    def _take(self, entry, from_link: str | None) -> bool:
        if not isinstance(entry, (list, tuple)) or len(entry) != 4:
            return False
        account, contact, d, stamp = entry
        stamp = clean_stamp(stamp)
        item = None if d is None else clean_item(d)
        if not isinstance(account, str) or not isinstance(contact, str) or stamp is None \
                or (d is not None and item is None) or not account or not contact:
            return False
        if not self.svc.roster.apply(account, contact, item, stamp):
            return False
        self.stats["roster_in"] += 1
        self.svc.router.push(account, contact)
        return True

    # ---------------------------------------------------------------- frames in
    def on_frame(self, ftype: str, origin: str, payload, from_link: str | None):
        if ftype not in FRAMES:
            return None
        if not isinstance(payload, dict):
            return True
        now = self.core.now()
        if ftype == STANZA:
            self._stanza(payload, origin, now)
        elif ftype == ROSTER:
            self._take([payload.get("account"), payload.get("contact"), payload.get("item"),
                        payload.get("stamp")], from_link)
        elif ftype == VERSIONS:
            self._versions(payload.get("versions"), origin)
        elif ftype == ROSTERS:
            entries = payload.get("entries")
            links = self.links
            for e in entries if isinstance(entries, list) else ():
                if self._take(e, from_link) and links is not None:
                    links.send_extension(ROSTER, {"account": e[0], "contact": e[1], "item": e[2], "stamp": e[3]},
                                         None, from_link)
        elif ftype == RESTORE:
            servers = payload.get("servers")
            if isinstance(servers, list):
                self.restore({x for x in servers if isinstance(x, str)})
        return True

    def _versions(self, theirs, origin: str) -> None:
        if not isinstance(theirs, dict):
            return
        store, links = self.svc.roster, self.links
        if links is None:
            return
        entries = []
        for account in store.accounts() | {a for a in theirs if isinstance(a, str)}:
            if store.version(account) != theirs.get(account, "0"):
                entries += store.entries(account)
        for i in range(0, len(entries), CHUNK):
            links.send_extension(ROSTERS, {"entries": entries[i:i + CHUNK]}, {origin})

    def _stanza(self, payload: dict, origin: str, now: float) -> None:
        xml, to = payload.get("xml"), payload.get("to")
        el = None
        if isinstance(xml, str) and (to is None or (isinstance(to, list) and all(isinstance(x, str) for x in to))):
            try:
                el = etree.fromstring(xml.encode("utf-8"), _PARSER)
            except (etree.XMLSyntaxError, ValueError):
                el = None
        if el is None or el.tag not in _STANZAS or el.getroottree().docinfo.doctype:
            self.stats["stanzas_refused"] += 1
            log.warning("XMPP stanza from server %s refused: not a stanza", origin)
            return
        self.stats["stanzas_in"] += 1
        mark = payload.get("mark")
        self.mark = (mark[0], float(mark[1])) if isinstance(mark, list) and len(mark) == 2 and \
            isinstance(mark[0], str) and 0 < len(mark[0]) <= 64 and isinstance(mark[1], (int, float)) \
            and not isinstance(mark[1], bool) else None
        try:
            self.deliver_here(el, None if to is None else [b for b in map(bare_of, to) if b is not None], now)
        finally:
            self.mark = None
