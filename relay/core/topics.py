"""The network's topic namespace: names, filters, shared subscriptions, and the tries that match them.

One namespace for every protocol that publishes: MQTT topics, and PubSub nodes
(node `a/b/c` is topic `a/b/c`).

Pure data structures: no I/O, no locking. Rules follow MQTT 5.0 section 4.7 (identical
in 3.1.1 section 4.7) and 4.8.2 for shared subscriptions:

* levels are separated by '/', empty levels are allowed ("/a", "a//b", "a/");
* '+' matches exactly one level and must occupy a whole level;
* '#' matches any number of levels *including the parent level* ("a/#" matches "a")
  and must be the whole last level;
* a topic whose name starts with '$' is not matched by a filter whose first level
  is a wildcard ("#" and "+/x" do not match "$SYS/x"; "$SYS/#" does).

Both tries are keyed by level, so a match costs O(depth x wildcard branches) and is
independent of the number of stored filters / retained topics.
"""

from __future__ import annotations

import math
from typing import Any, Hashable, Iterator

__all__ = [
    "MAX_TOPIC_BYTES", "SHARE_PREFIX",
    "valid_topic_name", "valid_topic_filter", "parse_shared",
    "TopicTree", "RetainedStore", "TopicItem",
]

MAX_TOPIC_BYTES = 65535          # a UTF-8 string on the wire has a two-byte length
SHARE_PREFIX = "$share/"


def _fits(s: str) -> bool:
    # Cheap bound first: a code point is at most 4 UTF-8 bytes.  Encoding also
    # rejects lone surrogates, which cannot appear in well-formed UTF-8.
    if len(s) * 4 <= MAX_TOPIC_BYTES and s.isascii():
        return True
    try:
        return len(s.encode("utf-8")) <= MAX_TOPIC_BYTES
    except UnicodeEncodeError:
        return False


def valid_topic_name(s: str) -> bool:
    """A name a PUBLISH may carry: non-empty, no wildcards, no U+0000, <= 65535 bytes."""
    if not s or "+" in s or "#" in s or "\x00" in s:
        return False
    return _fits(s)


def valid_topic_filter(s: str) -> bool:
    """A filter a SUBSCRIBE may carry ('$share/...' is checked by parse_shared, not here)."""
    if not s or "\x00" in s:
        return False
    if "+" in s or "#" in s:
        levels = s.split("/")
        last = len(levels) - 1
        for i, level in enumerate(levels):
            if "#" in level:
                if level != "#" or i != last:
                    return False
            elif "+" in level and level != "+":
                return False
    return _fits(s)


def parse_shared(topic_filter: str) -> tuple[str, str] | None:
    """Split '$share/GROUP/FILTER' into (GROUP, FILTER); None for a non-shared filter.

    Raises ValueError for a '$share/...' filter of the wrong shape: empty or
    wildcard share name, missing or invalid real filter (MQTT 5.0 4.8.2).
    """
    if not topic_filter.startswith(SHARE_PREFIX):
        return None
    group, sep, real = topic_filter[len(SHARE_PREFIX):].partition("/")
    if not group:
        raise ValueError(f"shared subscription without a share name: {topic_filter!r}")
    if "+" in group or "#" in group or "\x00" in group:
        raise ValueError(f"share name must not contain wildcards: {topic_filter!r}")
    if not sep or not real:
        raise ValueError(f"shared subscription without a topic filter: {topic_filter!r}")
    if not valid_topic_filter(real):
        raise ValueError(f"invalid topic filter in shared subscription: {topic_filter!r}")
    return group, real


# -- subscriptions --------------------------------------------------------------------


class _SubNode:
    __slots__ = ("children", "values")

    def __init__(self) -> None:
        self.children: dict[str, _SubNode] = {}
        self.values: dict[Hashable, Any] = {}


class TopicTree:
    """Subscriptions: filter -> {key: value}, matched against topic names.

    `key` identifies the subscriber (a client id, a (group, client) pair, ...), so one
    filter holds at most one value per key.  A topic matching several filters of the
    same key yields that key once per filter: MQTT 5.0 lets the broker decide whether
    to deliver once with the highest QoS or once per subscription.
    """

    __slots__ = ("_root", "_count")

    def __init__(self) -> None:
        self._root = _SubNode()
        self._count = 0

    def __len__(self) -> int:
        """Number of (filter, key) subscriptions."""
        return self._count

    def subscribe(self, topic_filter: str, key: Hashable, value: Any = None) -> bool:
        """Add or replace `key`'s subscription on `topic_filter`; True if it was new."""
        if not valid_topic_filter(topic_filter):
            raise ValueError(f"invalid topic filter: {topic_filter!r}")
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _SubNode()
            node = child
        new = key not in node.values
        node.values[key] = value
        self._count += new
        return new

    def unsubscribe(self, topic_filter: str, key: Hashable) -> bool:
        """Remove `key` from `topic_filter`; False if it was not subscribed."""
        path: list[tuple[_SubNode, str]] = []
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                return False
            path.append((node, level))
            node = child
        if key not in node.values:
            return False
        del node.values[key]
        self._count -= 1
        # Prune empty branches so long-lived brokers do not accumulate dead nodes.
        for parent, level in reversed(path):
            child = parent.children[level]
            if child.values or child.children:
                break
            del parent.children[level]
        return True

    def get(self, topic_filter: str, key: Hashable, default: Any = None) -> Any:
        node = self._root
        for level in topic_filter.split("/"):
            node = node.children.get(level)
            if node is None:
                return default
        return node.values.get(key, default)

    def subscribers(self, topic_filter: str) -> dict[Hashable, Any]:
        """A copy of {key: value} subscribed to exactly `topic_filter`."""
        node = self._root
        for level in topic_filter.split("/"):
            node = node.children.get(level)
            if node is None:
                return {}
        return dict(node.values)

    def items(self) -> Iterator[tuple[str, Hashable, Any]]:
        """Every (filter, key, value)."""
        stack: list[tuple[_SubNode, tuple[str, ...]]] = [
            (child, (level,)) for level, child in self._root.children.items()]
        while stack:
            node, levels = stack.pop()
            if node.values:
                name = "/".join(levels)
                for key, value in node.values.items():
                    yield name, key, value
            for level, child in node.children.items():
                stack.append((child, levels + (level,)))

    def match_values(self, topic: str) -> list[dict[Hashable, Any]]:
        """The {key: value} dicts of every filter matching the topic name (the tree's own: copy
        before changing the tree while going through them). One dict per filter, so a key in two
        of them matches twice."""
        levels = topic.split("/")
        n = len(levels)
        out: list[dict[Hashable, Any]] = []
        dollar = topic[:1] == "$"
        stack = [(self._root, 0)]
        pop, push, add = stack.pop, stack.append, out.append
        while stack:
            node, i = pop()
            children = node.children
            wild = not (dollar and i == 0)
            if wild:
                multi = children.get("#")
                if multi is not None and multi.values:
                    add(multi.values)
            if i == n:
                if node.values:
                    add(node.values)
                continue
            child = children.get(levels[i])
            if child is not None:
                push((child, i + 1))
            if wild:
                child = children.get("+")
                if child is not None:
                    push((child, i + 1))
        return out

    def match(self, topic: str) -> list[tuple[Hashable, Any]]:
        """(key, value) of every subscription whose filter matches the topic name.

        `topic` must be a valid topic name (the codec checks PUBLISH topics).
        """
        return [kv for values in self.match_values(topic) for kv in values.items()]


# -- retained messages ------------------------------------------------------------------

_MISSING = object()


class _RetNode:
    __slots__ = ("children", "topic", "value")

    def __init__(self) -> None:
        self.children: dict[str, _RetNode] = {}
        self.topic: str | None = None   # set when this node holds a retained message
        self.value: Any = _MISSING


class RetainedStore:
    """Retained messages: topic name -> value, matched against topic filters.

    Whether an empty payload clears the topic is the caller's decision (MQTT-3.3.1-6/7);
    call `delete` for that.
    """

    __slots__ = ("_root", "_count")

    def __init__(self) -> None:
        self._root = _RetNode()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, topic: str) -> bool:
        return self.get(topic, _MISSING) is not _MISSING

    def set(self, topic: str, value: Any) -> None:
        if not valid_topic_name(topic):
            raise ValueError(f"invalid topic name: {topic!r}")
        node = self._root
        for level in topic.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _RetNode()
            node = child
        if node.value is _MISSING:
            self._count += 1
            node.topic = topic
        node.value = value

    def get(self, topic: str, default: Any = None) -> Any:
        node = self._root
        for level in topic.split("/"):
            node = node.children.get(level)
            if node is None:
                return default
        return default if node.value is _MISSING else node.value

    def delete(self, topic: str) -> bool:
        """Forget the retained message on `topic`; False if there was none."""
        path: list[tuple[_RetNode, str]] = []
        node = self._root
        for level in topic.split("/"):
            child = node.children.get(level)
            if child is None:
                return False
            path.append((node, level))
            node = child
        if node.value is _MISSING:
            return False
        node.value = _MISSING
        node.topic = None
        self._count -= 1
        for parent, level in reversed(path):
            child = parent.children[level]
            if child.value is not _MISSING or child.children:
                break
            del parent.children[level]
        return True

    def items(self) -> Iterator[tuple[str, Any]]:
        yield from self._subtree(self._root, skip_dollar=False)

    @staticmethod
    def _subtree(start: _RetNode, skip_dollar: bool) -> Iterator[tuple[str, Any]]:
        stack = [start]
        while stack:
            node = stack.pop()
            if node.value is not _MISSING:
                yield node.topic, node.value  # type: ignore[misc]
            for level, child in node.children.items():
                if skip_dollar and node is start and level[:1] == "$":
                    continue
                stack.append(child)

    def match(self, topic_filter: str) -> list[tuple[str, Any]]:
        """(topic, value) of every retained message whose topic the filter matches."""
        levels = topic_filter.split("/")
        n = len(levels)
        out: list[tuple[str, Any]] = []
        stack = [(self._root, 0)]
        while stack:
            node, i = stack.pop()
            if i == n:
                if node.value is not _MISSING:
                    out.append((node.topic, node.value))  # type: ignore[arg-type]
                continue
            level = levels[i]
            if level == "#":
                # The parent level itself ("a" for "a/#"), then everything below it;
                # at the root '#' must skip '$' topics.
                out.extend(self._subtree(node, skip_dollar=(i == 0)))
            elif level == "+":
                for name, child in node.children.items():
                    if i == 0 and name[:1] == "$":
                        continue
                    stack.append((child, i + 1))
            else:
                child = node.children.get(level)
                if child is not None:
                    stack.append((child, i + 1))
        return out


# -- published items ---------------------------------------------------------------------


class TopicItem:
    """One published item: what every protocol on the namespace publishes and receives.

    `metadata` is opaque to the service (MQTT 5.0 properties, PubSub item metadata);
    `expires` is an absolute time or None; `publisher` names who published it in its
    protocol (an MQTT client id, a JID); `cache` holds per-protocol renderings.
    """

    __slots__ = ("topic", "payload", "qos", "retain", "metadata", "expires", "publisher", "item_id", "cache")

    def __init__(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
                 metadata: dict[str, Any] | None = None, expires: float | None = None,
                 publisher: str | None = None, item_id: str | None = None):
        self.topic, self.payload, self.qos, self.retain = topic, payload, qos, retain
        self.metadata = metadata or {}
        self.expires = expires
        self.publisher = publisher
        self.item_id = item_id
        self.cache: dict = {}

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires

    def remaining(self, now: float) -> int | None:
        """Whole seconds left before it expires (at least 1), or None."""
        if self.expires is None:
            return None
        return max(1, math.ceil(self.expires - now))

    def as_retained(self) -> "TopicItem":
        """The copy kept as the topic's last item (same class, retain set, fresh cache)."""
        kept = type(self).__new__(type(self))
        TopicItem.__init__(kept, self.topic, self.payload, self.qos, True, self.metadata, self.expires,
                           self.publisher, self.item_id)
        return kept
