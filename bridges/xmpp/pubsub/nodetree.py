"""Nodetree plugins: how the nodes of a service are organised and kept (ejabberd's nodetree_*).

* `tree` (nodetree_tree): nodes are created and deleted explicitly and stored (the `pubsub` store).
* `virtual` (nodetree_virtual): nothing is stored; a node exists as soon as it is used (like an MQTT
  topic), with the default configuration and no owner.
* `dag` (nodetree_dag, XEP-0248): `tree` plus collections; a node's parents are the collections
  named in its `pubsub#collection` option (several: a directed acyclic graph) and, for the one
  namespace with MQTT, the existing nodes on its topic path (`a/b` and `a` for `a/b/c`), so
  MQTT's `a/#` and `a/+` are a subscription to `a` with depth all and 1.

Chosen per service: `modules: {pubsub: {nodetree: dag}}`.
"""

from __future__ import annotations

from typing import Iterable, Protocol

from .nodes import Node


class Nodetree(Protocol):
    name: str
    stored: bool            # nodes are written to the store
    implicit: bool          # a node exists when used (virtual)
    collections: bool       # parents, children and collection subscriptions

    def get(self, host: str, name: str) -> Node | None: ...
    def add(self, node: Node) -> None: ...
    def remove(self, host: str, name: str) -> Node | None: ...
    def nodes(self, host: str) -> list[Node]: ...
    def parents(self, node: Node) -> list[Node]:
        """The collections `node` is directly in."""
    def children(self, node: Node) -> list[Node]: ...


class TreeNodetree:
    name = "tree"
    stored = True
    implicit = False
    collections = False

    def __init__(self):
        self.by_host: dict[str, dict[str, Node]] = {}

    def get(self, host: str, name: str) -> Node | None:
        return self.by_host.get(host, {}).get(name)

    def add(self, node: Node) -> None:
        self.by_host.setdefault(node.host, {})[node.name] = node

    def remove(self, host: str, name: str) -> Node | None:
        nodes = self.by_host.get(host, {})
        node = nodes.pop(name, None)
        if not nodes:
            self.by_host.pop(host, None)
        return node

    def nodes(self, host: str) -> list[Node]:
        return list(self.by_host.get(host, {}).values())

    def all(self) -> Iterable[Node]:
        for nodes in self.by_host.values():
            yield from nodes.values()

    def parents(self, node: Node) -> list[Node]:
        return []

    def children(self, node: Node) -> list[Node]:
        return []

    def ancestors(self, node: Node) -> dict[str, int]:
        return {}

    def would_cycle(self, node: Node, collections: list[str]) -> bool:
        return False


class VirtualNodetree(TreeNodetree):
    name = "virtual"
    stored = False
    implicit = True


class DagNodetree(TreeNodetree):
    name = "dag"
    collections = True

    def parents(self, node: Node) -> list[Node]:
        out, seen = [], {node.name}
        for name in node.config.get("collection") or ():
            p = self.get(node.host, name)
            if p is not None and p.name not in seen:
                seen.add(p.name)
                out.append(p)
        parts = node.name.split("/")
        for i in range(len(parts) - 1, 0, -1):
            p = self.get(node.host, "/".join(parts[:i]))
            if p is not None:
                if p.name not in seen:
                    out.append(p)
                break          # the nearest existing one on the path; it has its own parents
        return out

    def children(self, node: Node) -> list[Node]:
        return [n for n in self.nodes(node.host) if n is not node and node in self.parents(n)]

    def ancestors(self, node: Node) -> dict[str, int]:
        """Every collection above `node` -> its distance (1: a direct parent)."""
        out: dict[str, int] = {}
        frontier, depth = [node], 0
        while frontier:
            depth += 1
            nxt = []
            for n in frontier:
                for p in self.parents(n):
                    if p.name not in out and p is not node:
                        out[p.name] = depth
                        nxt.append(p)
            frontier = nxt
        return out

    def would_cycle(self, node: Node, collections: list[str]) -> bool:
        for name in collections:
            if name == node.name:
                return True
            p = self.get(node.host, name)
            if p is not None and node.name in self.ancestors(p):
                return True
        return False


NODETREES = {"tree": TreeNodetree, "virtual": VirtualNodetree, "dag": DagNodetree}
