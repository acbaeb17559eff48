"""Accounts are network-wide: every change crosses the tree, so an account registered on one server
works on every server, whether the servers share one database or each has its own.

Frames (module frames in ENCAP, so they are replayed after a short split and deduplicated):

    ACCOUNT  {op: "put", account: {name, realm, sip_ha1, created, updated, groups, scram}}
             {op: "del", name, updated}
        one change, to every server. `scram` maps a mechanism to {salt, stored_key, server_key}
        (base64) and iterations: the secrets, never a password.
    ACCOUNTS {accounts: [account, ...], removed: {name: updated}}
        every account this server has, and the removals it knows of (tombstones), to a peer whose
        link just came up. The receiver keeps what is newer (`updated`) and passes on, as ACCOUNT
        frames, what it took.

A copy is stored like a local change (an idempotent upsert): with a shared database both servers
write the same row. Tombstones are stored with the accounts (table account_tombstones, written in
the unit that deletes the account), so a removal made while two servers were apart reaches the
other side at the netjoin even if every server that knew of it has restarted since. They expire
after `accounts.tombstone_lifetime` (checked hourly): a server apart for longer than that may
bring the account back.
"""

from __future__ import annotations

import base64
import logging
from typing import TYPE_CHECKING, Any

from relay.core.accounts import Account, AccountError, ScramSecret, account_key, valid_account_name

if TYPE_CHECKING:
    from relay.core.interfaces import CoreServices as Core

log = logging.getLogger("relay.accounts")

PUT_FRAME, SNAPSHOT_FRAME = "ACCOUNT", "ACCOUNTS"
EXPIRE_EVERY = 3600.0        # seconds between looks for expired tombstones


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def to_wire(a: Account) -> dict:
    return {"name": a.name, "realm": a.realm, "sip_ha1": a.sip_ha1, "sip_ha1_sha256": a.sip_ha1_sha256,
            "created": a.created, "updated": a.updated,
            "groups": sorted(a.groups),
            "scram": {m: {"salt": _b64(s.salt), "stored_key": _b64(s.stored_key), "server_key": _b64(s.server_key),
                          "iterations": s.iterations} for m, s in a.scram.items()}}


def _need(d: Any, key: str, types) -> Any:
    v = d.get(key) if isinstance(d, dict) else None
    if not isinstance(v, types) or isinstance(v, bool):
        raise AccountError(f"{key}: missing or of the wrong type")
    return v


def from_wire(d: Any) -> Account:
    """An account from a frame; AccountError names the bad field."""
    name = _need(d, "name", str)
    if not valid_account_name(name):
        raise AccountError(f"name: invalid account name {name!r}")
    scram = {}
    for mech, s in _need(d, "scram", dict).items():
        try:
            scram[mech] = ScramSecret(base64.b64decode(_need(s, "salt", str), validate=True),
                                      base64.b64decode(_need(s, "stored_key", str), validate=True),
                                      base64.b64decode(_need(s, "server_key", str), validate=True),
                                      _need(s, "iterations", int))
        except ValueError:
            raise AccountError(f"scram.{mech}: not base64") from None
    if "SCRAM-SHA-256" not in scram:
        raise AccountError("scram: SCRAM-SHA-256 is missing")
    groups = _need(d, "groups", list)
    if not all(isinstance(g, str) for g in groups):
        raise AccountError("groups: must be strings")
    ha1_256 = d.get("sip_ha1_sha256", "")  # absent from servers older than the SHA-256 HA1
    if not isinstance(ha1_256, str):
        raise AccountError("sip_ha1_sha256: must be a string")
    return Account(name, scram, _need(d, "sip_ha1", str), _need(d, "realm", str), frozenset(groups),
                   float(_need(d, "created", (int, float))), float(_need(d, "updated", (int, float))), ha1_256)


class AccountSync:
    def __init__(self, core: "Core"):
        self.core = core
        self.lifetime = core.config.accounts.tombstone_lifetime
        core.hooks.add("link_extension", self._frame, owner="accounts")
        core.hooks.add("link_up", self._link_up, owner="accounts")
        self.expire(core.now())
        core.timers.every(min(EXPIRE_EVERY, self.lifetime), self.expire, core.now(), owner="accounts")

    @property
    def tombstones(self) -> dict[str, float]:
        """Account key -> when it was removed (the accounts store keeps them)."""
        return self.core.accounts.tombstones

    def expire(self, now: float) -> None:
        n = self.core.accounts.expire_tombstones(now - self.lifetime)
        if n:
            log.info("accounts: %d removal(s) older than %gs forgotten", n, self.lifetime)

    def _router(self):
        return getattr(self.core.net, "router", None)

    def changed(self, a: Account, exclude_link: str | None = None) -> None:
        r = self._router()
        if r is not None and r.peers:
            r.send_extension(PUT_FRAME, {"op": "put", "account": to_wire(a)}, None, exclude_link)

    def removed(self, name: str, now: float, exclude_link: str | None = None) -> None:
        """A local removal (its tombstone is already stored, with the deletion): tell every server."""
        r = self._router()
        if r is not None and r.peers:
            r.send_extension(PUT_FRAME, {"op": "del", "name": name, "updated": now}, None, exclude_link)

    def _link_up(self, peer_id: str) -> None:
        self.expire(self.core.now())
        accts, r = self.core.accounts.by_key.values(), self._router()
        if (accts or self.tombstones) and r is not None:
            r.send_extension(SNAPSHOT_FRAME, {"accounts": [to_wire(a) for a in accts],
                                              "removed": dict(self.tombstones)}, {peer_id})

    def _remove(self, name: str, when: Any) -> bool:
        """A removal from another server: applied if our copy is not newer; True if applied."""
        if not isinstance(when, (int, float)) or isinstance(when, bool) or not valid_account_name(name):
            return False
        key = account_key(name)
        a = self.core.accounts.get(name)
        if a is not None and a.updated > when:
            return False
        if a is None and (self.tombstones.get(key, -1.0) >= when or when < self.core.now() - self.lifetime):
            return False                    # known already, or too old to remember
        when = max(when, self.tombstones.get(key, when))
        if a is not None:
            self.core.accounts.delete(a.name, removed=when)
            self.core.hooks.run("account_removed", a.name)
        else:
            self.core.accounts.bury(name, when)
        return True

    def _take(self, d: Any, origin: str) -> Account | None:
        """Store a copy if it is newer than ours; returns it if taken."""
        try:
            a = from_wire(d)
        except AccountError as e:
            log.warning("account from server %s refused: %s", origin, e)
            return None
        mine = self.core.accounts.get(a.name)
        if mine is not None and (mine.updated, mine.sip_ha1) >= (a.updated, a.sip_ha1):
            return None
        if self.tombstones.get(account_key(a.name), -1.0) >= a.updated:
            return None                     # removed after this copy was made
        self.core.accounts.put(a)           # (its tombstone goes with it)
        if mine is None:
            self.core.hooks.run("account_registered", a)
        return a

    def _frame(self, ftype: str, origin: str, payload: Any, from_link: str | None):
        if ftype == PUT_FRAME:
            if not isinstance(payload, dict):
                return True
            if payload.get("op") == "put":
                self._take(payload.get("account"), origin)
            elif payload.get("op") == "del" and isinstance(payload.get("name"), str):
                self._remove(payload["name"], payload.get("updated"))
            return True
        if ftype == SNAPSHOT_FRAME:
            if not isinstance(payload, dict):
                return True
            accts, removed = payload.get("accounts"), payload.get("removed")
            for d in accts if isinstance(accts, list) else ():
                a = self._take(d, origin)
                if a is not None:
                    self.changed(a, exclude_link=from_link)
            for name, when in removed.items() if isinstance(removed, dict) else ():
                if self._remove(name, when):
                    r = self._router()
                    if r is not None:
                        r.send_extension(PUT_FRAME, {"op": "del", "name": name, "updated": when}, None, from_link)
            return True
        return None


__all__ = ["AccountSync", "to_wire", "from_wire", "account_key"]
