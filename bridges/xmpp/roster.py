"""Rosters and subscription states (RFC 6121 §2-§3), per account, behind a small store class.

Kept in memory and written to a JSON file in the data dir when changed (`flush`, called by the
module's timer, never on the stanza path), so the core never waits on the disk. The interface
(items, item, put, remove) is what a move onto relay/storage needs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# subscription -> (after an outbound "subscribed" we send, after an inbound one we receive), etc.
SUBSCRIPTIONS = ("none", "to", "from", "both")


def with_from(sub: str, on: bool) -> str:
    """The subscription with the contact's view of us (`from`) switched on or off."""
    has_to = sub in ("to", "both")
    return ("both" if has_to else "from") if on else ("to" if has_to else "none")


def with_to(sub: str, on: bool) -> str:
    """The subscription with our view of the contact (`to`) switched on or off."""
    has_from = sub in ("from", "both")
    return ("both" if has_from else "to") if on else ("from" if has_from else "none")


class RosterStore:
    """account -> {contact bare JID: {"name", "subscription", "ask", "groups"}}, plus a version."""

    def __init__(self, path: Path | None):
        self.path = path
        self.rosters: dict[str, dict[str, dict]] = {}
        self.versions: dict[str, int] = {}
        self.dirty = False
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text())
                self.rosters = {a: dict(items) for a, items in data.get("rosters", {}).items()}
                self.versions = {a: int(v) for a, v in data.get("versions", {}).items()}
            except (OSError, ValueError, AttributeError):
                self.rosters, self.versions = {}, {}

    def items(self, account: str) -> dict[str, dict]:
        return self.rosters.get(account, {})

    def item(self, account: str, contact: str) -> dict | None:
        return self.rosters.get(account, {}).get(contact)

    def put(self, account: str, contact: str, **changes) -> dict:
        """Create or update an item; returns it."""
        item = self.rosters.setdefault(account, {}).setdefault(
            contact, {"name": None, "subscription": "none", "ask": None, "groups": []})
        item.update(changes)
        self._changed(account)
        return item

    def remove(self, account: str, contact: str) -> bool:
        items = self.rosters.get(account, {})
        if items.pop(contact, None) is None:
            return False
        self._changed(account)
        return True

    def version(self, account: str) -> str:
        return str(self.versions.get(account, 0))

    def _changed(self, account: str) -> None:
        self.versions[account] = self.versions.get(account, 0) + 1
        self.dirty = True

    def flush(self) -> None:
        if not self.dirty or self.path is None:
            return
        self.dirty = False
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"rosters": self.rosters, "versions": self.versions}))
        os.replace(tmp, self.path)
