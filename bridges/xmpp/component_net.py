"""XEP-0114 components across the tree: a component's domain is routed to its server from any server.

Each server announces the whole set of domains its components hold; every server keeps the sets of
all the others, so a stanza to a component's domain (or a JID under it) goes as an XMPP_STANZA frame
to the server that has the component (federation.py delivers it there), and what a component sends
reaches accounts wherever their resources are.

Frame (module frame in ENCAP, to every server; numbered, replayed after a short split):

    XMPP_COMPONENTS {server, domains: {domain: stamp [time, server]}, ver: [epoch, n]}
        the set of `server`'s component domains (empty: none left). Sent when it changes, and on
        link_up for every set this server knows (its own, and those it learned), so both sides of a
        new link learn the whole network. `ver` orders one server's sets (epoch: when the module
        started there, so a restarted server's set replaces what it had before); an older or equal
        one is ignored, which also drops the copies a link-up burst sends around.

Every server with the xmpp module sends its set (empty too) at link-up and when the module starts
on a linked server, and its own set to a server whose set it gets for the first time (a server
without the module between them does not pass sets on at link-up); so the servers whose sets we
hold are the XMPP servers of the tree (`xmpp_servers`: the ones a MAM query asks, mam_tree.py).

One domain, one component in the network: a component is refused with `conflict` when another server
already holds its domain. Two that authenticated apart (at once, or on both sides of a split) meet
in a set: the older claim (stamp) wins, and the server of the newer one closes it with `conflict`.
A server's sets are dropped when it is gone for good (hook `servers_gone`, after the split-hold;
while it is held, stanzas for its components wait in the replay buffer).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .component import ComponentSession

FRAME = "XMPP_COMPONENTS"

Stamp = tuple   # (time, server id): when and where a domain was claimed


def _stamp(v) -> Stamp | None:
    if isinstance(v, (list, tuple)) and len(v) == 2 and isinstance(v[0], (int, float)) \
            and not isinstance(v[0], bool) and isinstance(v[1], str):
        return (float(v[0]), v[1])
    return None


def _ver(v) -> list | None:
    if isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                   for x in v):
        return v
    return None


class ComponentDomains:
    def __init__(self, svc, module):
        self.svc, self.core = svc, svc.core
        self.me = self.core.config.server.id
        self.epoch = round(self.core.now(), 6)
        self.n = 0
        self.own: dict[str, Stamp] = {}                     # domain -> stamp of a component here
        self.sets: dict[str, dict[str, Stamp]] = {}         # server -> its domains
        self.vers: dict[str, list] = {}                     # server -> ver of the set we hold
        self.stats = {"component_sets_in": 0, "component_conflicts": 0}
        module.hook("link_extension", self.on_frame)
        module.hook("link_up", self.link_up)
        module.hook("servers_gone", self.servers_gone)
        links = self.links
        if links is not None and links.peers:
            self.announce()                             # loaded on a linked server: here is one more

    @property
    def links(self):
        return getattr(self.core.net, "router", None)

    # ---------------------------------------------------------------- lookups
    def server_of(self, domain: str) -> str | None:
        """The other server whose component holds `domain` (the oldest claim), or None."""
        best = None
        for sid, domains in self.sets.items():
            st = domains.get(domain)
            if st is not None and (best is None or st < best[0]):
                best = (st, sid)
        return best[1] if best is not None else None

    def xmpp_servers(self) -> set[str]:
        """The other servers of the tree that run the xmpp module (they announced a set)."""
        links = self.links
        return set(self.vers) & set(links.tree.servers()) if links is not None else set()

    def remote_domains(self) -> dict[str, str]:
        return {d: sid for d in {d for ds in self.sets.values() for d in ds} if (sid := self.server_of(d))}

    # ---------------------------------------------------------------- components here
    def claim(self, c: "ComponentSession", now: float) -> bool:
        """A component authenticated for `c.domain`: it holds it network-wide, unless someone does."""
        d = c.domain
        if d in self.svc.components or self.server_of(d) is not None:
            return False
        self.svc.components[d] = c
        self.own[d] = (round(now, 6), self.me)
        self.announce()
        return True

    def release(self, c: "ComponentSession") -> None:
        d = c.domain
        if d is not None and self.svc.components.get(d) is c:
            del self.svc.components[d]
            self.own.pop(d, None)
            self.announce()

    def announce(self) -> None:
        links = self.links
        self.n += 1
        if links is not None:
            links.send_extension(FRAME, {"server": self.me, "domains": {d: list(st) for d, st in self.own.items()},
                                         "ver": [self.epoch, self.n]})

    # ---------------------------------------------------------------- the tree
    def link_up(self, peer_id: str, *rest) -> None:
        links = self.links
        if links is None:
            return None
        self.announce()
        for sid, ver in list(self.vers.items()):          # empty sets too: they say the server is one of us
            links.send_extension(FRAME, {"server": sid, "ver": ver,
                                         "domains": {d: list(st) for d, st in self.sets.get(sid, {}).items()}})
        return None

    def servers_gone(self, gone) -> None:
        for sid in gone:
            self.sets.pop(sid, None)
            self.vers.pop(sid, None)
        return None

    def on_frame(self, ftype: str, origin: str, payload, from_link: str | None):
        if ftype != FRAME:
            return None
        if not isinstance(payload, dict):
            return True
        sid, ver, domains = payload.get("server"), _ver(payload.get("ver")), payload.get("domains")
        if not isinstance(sid, str) or sid == self.me or ver is None or not isinstance(domains, dict):
            return True
        old = self.vers.get(sid)
        if old is not None and old >= ver:
            return True
        taken = {d: st for d, v in domains.items() if isinstance(d, str) and (st := _stamp(v)) is not None}
        self.stats["component_sets_in"] += 1
        self.vers[sid] = ver
        if taken:
            self.sets[sid] = taken
        else:
            self.sets.pop(sid, None)
        self._settle(taken)
        if old is None and self.links is not None:
            # A server new to us: ours to it, as a server between us may not relay sets (no xmpp there).
            self.links.send_extension(FRAME, {"server": self.me, "ver": [self.epoch, self.n],
                                              "domains": {d: list(st) for d, st in self.own.items()}}, {sid})
        return True

    def _settle(self, theirs: dict[str, Stamp]) -> None:
        """A component here whose domain an older claim elsewhere holds is closed (`conflict`)."""
        lost = [d for d, st in theirs.items() if d in self.own and st < self.own[d]]
        for d in lost:
            c = self.svc.components.pop(d, None)
            self.own.pop(d, None)
            self.stats["component_conflicts"] += 1
            if c is not None:
                c.stream_error("conflict", f"{d} is held by a component on another server")
        if lost:
            self.announce()
