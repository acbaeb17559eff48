"""The network's spanning tree as one server sees it: rooted at `me`.

Rooting the tree at this server makes routing trivial: a server's route is the
child of `me` whose subtree holds it, kept in a table updated on every add and
remove, so `link_of` is one dict lookup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping


class LoopDetected(Exception):
    """A server was introduced whose id or name already exists: the link that introduced it makes a loop.

    `server_id` is the id of the server being introduced."""

    def __init__(self, reason: str, server_id: str):
        super().__init__(reason)
        self.server_id = server_id


class UnknownServer(KeyError):
    """No server with this id is in the tree."""


@dataclass(frozen=True, slots=True)
class Server:
    id: str
    name: str
    parent: str | None  # None only for me
    hops: int  # as the introducing server reported it
    depth: int  # links between me and this server
    description: str = ""


@dataclass(slots=True)
class MapNode:
    """One server in `Tree.map()`, its children sorted by name."""

    id: str
    name: str
    hops: int
    depth: int
    description: str
    children: list[MapNode] = field(default_factory=list)


class Tree:
    def __init__(self, me_id: str, me_name: str, description: str = ""):
        self.me = me_id
        self._servers: dict[str, Server] = {me_id: Server(me_id, me_name, None, 0, 0, description)}
        self._children: dict[str, dict[str, None]] = {me_id: {}}  # dicts as ordered sets
        self._names: dict[str, str] = {me_name.lower(): me_id}  # server names are case-insensitive
        self._route: dict[str, str | None] = {me_id: None}
        self.routes: Mapping[str, str | None] = MappingProxyType(self._route)

    def __contains__(self, server_id: object) -> bool:
        return server_id in self._servers

    def __len__(self) -> int:
        return len(self._servers)

    def server(self, server_id: str) -> Server:
        try:
            return self._servers[server_id]
        except KeyError:
            raise UnknownServer(server_id) from None

    def by_name(self, name: str) -> Server | None:
        sid = self._names.get(name.lower())
        return None if sid is None else self._servers[sid]

    def add_server(self, server_id: str, name: str, parent_id: str, hops: int, description: str = "") -> Server:
        """Add a server behind `parent_id`. Raises LoopDetected if its id or name is already here."""
        existing = self._servers.get(server_id) or self.by_name(name)
        if existing is not None:
            via = self._route[existing.id] or "this server"
            raise LoopDetected(f"cannot add {name} ({server_id}): {existing.name} ({existing.id}) "
                               f"already exists, reached via {via}", server_id)
        parent = self.server(parent_id)
        server = Server(server_id, name, parent_id, hops, parent.depth + 1, description)
        self._servers[server_id] = server
        self._children[server_id] = {}
        self._children[parent_id][server_id] = None
        self._names[name.lower()] = server_id
        self._route[server_id] = server_id if parent_id == self.me else self._route[parent_id]
        return server

    def remove_subtree(self, server_id: str) -> list[str]:
        """Remove a server and everything behind it; returns their ids, leaves first."""
        if server_id == self.me:
            raise ValueError("cannot remove this server from its own tree")
        parent = self.server(server_id).parent
        preorder, stack = [], [server_id]
        while stack:
            sid = stack.pop()
            preorder.append(sid)
            stack.extend(self._children[sid])
        preorder.reverse()  # every server now comes after all of its descendants
        for sid in preorder:
            del self._names[self._servers.pop(sid).name.lower()]
            del self._children[sid]
            del self._route[sid]
        del self._children[parent][server_id]
        return preorder

    def link_of(self, server_id: str) -> str | None:
        """My directly linked neighbour through which `server_id` is reached (None for me)."""
        try:
            return self._route[server_id]
        except KeyError:
            raise UnknownServer(server_id) from None

    def neighbours(self) -> list[str]:
        return list(self._children[self.me])

    def children(self, server_id: str) -> list[str]:
        self.server(server_id)
        return list(self._children[server_id])

    def servers(self) -> list[str]:
        """Every server id, me first; a parent always comes before its children."""
        return list(self._servers)

    def path(self, a: str, b: str) -> list[str]:
        """The servers from `a` to `b` along the tree, both included."""
        sa, sb = self.server(a), self.server(b)
        up, down = [], []
        while sa.depth > sb.depth:
            up.append(sa.id)
            sa = self._servers[sa.parent]
        while sb.depth > sa.depth:
            down.append(sb.id)
            sb = self._servers[sb.parent]
        while sa is not sb:
            up.append(sa.id)
            down.append(sb.id)
            sa, sb = self._servers[sa.parent], self._servers[sb.parent]
        up.append(sa.id)
        up.extend(reversed(down))
        return up

    def map(self) -> MapNode:
        """The tree as nested MapNodes rooted at me, for `relayctl map`."""
        nodes: dict[str, MapNode] = {}
        # Insertion order puts every parent before its children.
        for s in self._servers.values():
            node = nodes[s.id] = MapNode(s.id, s.name, s.hops, s.depth, s.description)
            if s.parent is not None:
                nodes[s.parent].children.append(node)
        for node in nodes.values():
            node.children.sort(key=lambda n: n.name)
        return nodes[self.me]


def render_map(root: MapNode) -> str:
    """ASCII drawing of a map, one server a line: ``|- name [id] hops N``."""
    lines = []
    stack = [(root, "", "")]  # (node, lead of its line, lead of its children's lines)
    while stack:
        node, lead, child_lead = stack.pop()
        lines.append(f"{lead}{node.name} [{node.id}] hops {node.hops}")
        last = len(node.children) - 1
        for i in range(last, -1, -1):  # pushed in reverse so they pop in order
            stack.append((node.children[i], child_lead + ("`- " if i == last else "|- "),
                          child_lead + ("   " if i == last else "|  ")))
    return "\n".join(lines)
