"""The one place that decides which links a frame goes out on.

The equivalent of InspIRCd's DoOneToAllButSender (and of TS6 servers' "send to
every server but the one it came from"), made subscription-aware: a frame goes
once to each neighbour that leads to at least one server needing it, and never
back out of the link it arrived on. Every forwarding path calls one of these
two functions, so "each link at most once" holds in one place.
"""

from __future__ import annotations

from typing import Iterable

from topology.tree import Tree, UnknownServer


def links_for(servers_needing: Iterable[str], tree: Tree, exclude_link: str | None = None) -> set[str]:
    """The neighbours to send to so every server in `servers_needing` is reached.

    `exclude_link` is the neighbour the frame came from. This server itself in
    `servers_needing` needs no link. An unknown server id raises UnknownServer:
    state pointing at a removed server is a bug to surface, not to route around.
    """
    routes = tree.routes
    try:
        links = {routes[sid] for sid in servers_needing}
    except KeyError as e:
        raise UnknownServer(e.args[0]) from None
    links.discard(None)
    links.discard(exclude_link)
    return links


def links_for_all(tree: Tree, exclude_link: str | None = None) -> set[str]:
    """Every neighbour but `exclude_link`: for state every server keeps (servers, users, channels)."""
    links = set(tree.neighbours())
    links.discard(exclude_link)
    return links
