"""Registrar bindings: address-of-record -> contacts, with expiry (time passed in).

In memory behind `BindingStore`, saved to a JSON file when one is given (`save_if_dirty`, called from the
module's timer, so a burst of REGISTERs costs one write). The storage layer will take this over; its
interface is `get`, `update`, `remove_all`, `expire`, `aors`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


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


class BindingStore:
    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else None
        self._aors: dict[str, list[Binding]] = {}
        self.dirty = False

    def get(self, aor: str, now: float) -> list[Binding]:
        return [b for b in self._aors.get(aor, ()) if b.expires_at > now]

    def aors(self) -> list[str]:
        return list(self._aors)

    def update(self, aor: str, binding: Binding) -> None:
        """Add or refresh a binding (same contact URI, or same +sip.instance and reg-id); expires_at <= now
        removes it."""
        kept = [b for b in self._aors.get(aor, ())
                if not (b.contact == binding.contact or
                        (binding.instance and b.instance == binding.instance and b.reg_id == binding.reg_id))]
        if binding.expires_at > 0:
            kept.append(binding)
        self._set(aor, kept)

    def remove(self, aor: str, contact: str) -> None:
        self._set(aor, [b for b in self._aors.get(aor, ()) if b.contact != contact])

    def remove_all(self, aor: str) -> None:
        self._set(aor, [])

    def expire(self, now: float) -> list[str]:
        """Drop expired bindings; returns the AORs left with none."""
        emptied = []
        for aor, bindings in list(self._aors.items()):
            live = [b for b in bindings if b.expires_at > now]
            if len(live) != len(bindings):
                self._set(aor, live)
                if not live:
                    emptied.append(aor)
        return emptied

    def _set(self, aor: str, bindings: list[Binding]) -> None:
        if bindings:
            self._aors[aor] = bindings
        else:
            self._aors.pop(aor, None)
        self.dirty = True

    # -------------------------------------------------------------- persistence
    def load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
            self._aors = {aor: [Binding(**{**b, "flow": tuple(b["flow"])}) for b in bs]
                          for aor, bs in data.get("aors", {}).items()}
        except (OSError, ValueError, TypeError, KeyError):
            self._aors = {}  # a damaged file costs the bindings (clients re-register), not the server
        self.dirty = False

    def save_if_dirty(self) -> None:
        if self.path is None or not self.dirty:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"aors": {aor: [asdict(b) for b in bs] for aor, bs in self._aors.items()}}))
        os.replace(tmp, self.path)
        self.dirty = False
