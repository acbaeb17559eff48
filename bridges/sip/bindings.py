"""Registrar bindings: address-of-record -> contacts, with expiry (time passed in).

Local bindings (the ones this server's registrar made) live in memory and in the server's storage, the
`sip` store: read once at start (`load`), then every change is one queued write (`Op`), committed by the
runtime's storage writer. Bindings made on other servers (`remote`) are what they announced over the tree
(SIP_BIND, see federation.py): kept in memory only, learned again from the burst after a restart.

Schema (store `sip`, version 1; an older deployment's `<data_dir>/sip-bindings.json` is imported when the
store is created):

    sip_bindings(server, aor, contact, expires_at, call_id, cseq, transport, host, port, q, instance,
                 reg_id;  PK (server, aor, contact))
        expires_at: absolute UNIX time; transport/host/port: the flow the REGISTER came over
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from relay.core.storage import Op, Schema, Storage

# What the store loads when it opens (Schema.loads: each ? is the server's id).
_COLUMNS = "aor, contact, expires_at, call_id, cseq, transport, host, port, q, instance, reg_id"
_LOAD = f"SELECT {_COLUMNS} FROM sip_bindings WHERE server = ? ORDER BY aor, contact"

SCHEMA = Schema("sip", ("""
CREATE TABLE sip_bindings (
    server TEXT NOT NULL,
    aor TEXT NOT NULL,
    contact TEXT NOT NULL,
    expires_at {real} NOT NULL,
    call_id TEXT NOT NULL,
    cseq {int} NOT NULL,
    transport TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    q {real},
    instance TEXT,
    reg_id INTEGER,
    PRIMARY KEY (server, aor, contact)
);
""",), tables=("sip_bindings",), loads=(_LOAD,))

_UPSERT = ("INSERT INTO sip_bindings(server, aor, contact, expires_at, call_id, cseq, transport, host, port, q, "
           "instance, reg_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(server, aor, contact) DO UPDATE SET "
           "expires_at = excluded.expires_at, call_id = excluded.call_id, cseq = excluded.cseq, "
           "transport = excluded.transport, host = excluded.host, port = excluded.port, q = excluded.q, "
           "instance = excluded.instance, reg_id = excluded.reg_id")
_DELETE = "DELETE FROM sip_bindings WHERE server = ? AND aor = ? AND contact = ?"


@dataclass(slots=True)
class Binding:
    """One contact of an AOR. `flow` is where requests to it go: (transport, host, port) the REGISTER
    came from (so NATed and TCP clients are reached over what they opened)."""
    contact: str
    expires_at: float
    call_id: str
    cseq: int
    flow: tuple[str, str, int]
    q: float | None = None
    instance: str | None = None
    reg_id: int | None = None

    def remaining(self, now: float) -> int:
        return max(0, int(self.expires_at - now + 0.5))

    def row(self, server: str, aor: str) -> tuple:
        return (server, aor, self.contact, self.expires_at, self.call_id, self.cseq, *self.flow, self.q,
                self.instance, self.reg_id)


@dataclass(slots=True)
class RemoteBinding:
    """A contact of an AOR registered on another server: requests for it go to that server."""
    server: str
    contact: str
    expires_at: float

    def remaining(self, now: float) -> int:
        return max(0, int(self.expires_at - now + 0.5))


def _legacy_units(path: Path, server: str) -> Iterator[tuple[Op, ...]]:
    """The JSON file of an older deployment as writes into the store (a damaged file is skipped: the
    clients re-register)."""
    if not path.exists():
        return
    try:
        data = json.loads(path.read_text())
        aors = {aor: [Binding(**{**b, "flow": tuple(b["flow"])}) for b in bs]
                for aor, bs in data.get("aors", {}).items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return
    for aor, bindings in aors.items():
        yield tuple(Op(_UPSERT, b.row(server, aor)) for b in bindings)


class BindingStore:
    """`get`, `update`, `remove`, `remove_all`, `expire`, `aors` for this server's bindings; `remote`
    for the other servers' (`set_remote`, `remote_get`, `forget_server`)."""

    def __init__(self, storage: Storage | None = None, legacy_file: Path | None = None):
        self.storage = storage
        self.server = storage.server_id if storage is not None else "001"
        if storage is not None:
            storage.open_store(SCHEMA, (lambda: _legacy_units(legacy_file, self.server)) if legacy_file else None)
        self._aors: dict[str, list[Binding]] = {}
        self.remote: dict[str, dict[str, list[RemoteBinding]]] = {}   # aor -> server id -> its contacts
        self.writes = 0

    def get(self, aor: str, now: float) -> list[Binding]:
        return [b for b in self._aors.get(aor, ()) if b.expires_at > now]

    def aors(self) -> list[str]:
        return list(self._aors)

    def update(self, aor: str, binding: Binding) -> None:
        """Add or refresh a binding (same contact URI, or same +sip.instance and reg-id); expires_at <= 0
        removes it."""
        old = self._aors.get(aor, ())
        kept = [b for b in old
                if not (b.contact == binding.contact or
                        (binding.instance and b.instance == binding.instance and b.reg_id == binding.reg_id))]
        for b in old:
            if b not in kept and b.contact != binding.contact:
                self._write(_DELETE, (self.server, aor, b.contact))
        if binding.expires_at > 0:
            kept.append(binding)
            self._write(_UPSERT, binding.row(self.server, aor))
        elif any(b.contact == binding.contact for b in old):
            self._write(_DELETE, (self.server, aor, binding.contact))
        self._set(aor, kept)

    def remove(self, aor: str, contact: str) -> None:
        if any(b.contact == contact for b in self._aors.get(aor, ())):
            self._write(_DELETE, (self.server, aor, contact))
        self._set(aor, [b for b in self._aors.get(aor, ()) if b.contact != contact])

    def remove_all(self, aor: str) -> None:
        if self._aors.get(aor):
            self._write("DELETE FROM sip_bindings WHERE server = ? AND aor = ?", (self.server, aor))
        self._set(aor, [])

    def expire(self, now: float) -> list[str]:
        """Drop expired bindings (local and remote); returns the local AORs that changed."""
        changed = []
        for aor, bindings in list(self._aors.items()):
            live = [b for b in bindings if b.expires_at > now]
            if len(live) != len(bindings):
                for b in bindings:
                    if b.expires_at <= now:
                        self._write(_DELETE, (self.server, aor, b.contact))
                self._set(aor, live)
                changed.append(aor)
        for aor, servers in list(self.remote.items()):
            for sid, contacts in list(servers.items()):
                live = [c for c in contacts if c.expires_at > now]
                if len(live) != len(contacts):
                    self.set_remote(aor, sid, live)
        return changed

    def _set(self, aor: str, bindings: list[Binding]) -> None:
        if bindings:
            self._aors[aor] = bindings
        else:
            self._aors.pop(aor, None)

    def _write(self, sql: str, args: tuple) -> None:
        if self.storage is not None:
            self.writes += 1
            self.storage.queue.write(sql, args)

    # -------------------------------------------------------------- other servers' bindings
    def set_remote(self, aor: str, server: str, contacts: list[RemoteBinding]) -> None:
        servers = self.remote.setdefault(aor, {})
        if contacts:
            servers[server] = contacts
        else:
            servers.pop(server, None)
            if not servers:
                del self.remote[aor]

    def remote_get(self, aor: str, now: float) -> dict[str, list[RemoteBinding]]:
        """Server id -> its live contacts of `aor`."""
        out = {}
        for sid, contacts in self.remote.get(aor, {}).items():
            live = [c for c in contacts if c.expires_at > now]
            if live:
                out[sid] = live
        return out

    def forget_server(self, server: str) -> None:
        for aor in list(self.remote):
            self.set_remote(aor, server, [])

    # -------------------------------------------------------------- start
    def load(self, now: float) -> None:
        """This server's bindings from storage; the ones that expired while it was down are deleted."""
        if self.storage is None:
            return
        self._aors = {}
        for (aor, contact, expires_at, call_id, cseq, transport, host, port, q, instance, reg_id) in \
                self.storage.load(_LOAD):
            b = Binding(contact, float(expires_at), call_id, int(cseq), (transport, host, int(port)), q, instance,
                        reg_id)
            self._aors.setdefault(aor, []).append(b)
        self.expire(now)
