"""Anti-entropy: compare state digests with every server.

A round broadcasts VERIFY_REQ (an ENCAP extension frame); every server answers
its digest and counts to the asker. `relayctl verify` starts a round and
reads the result; a periodic round logs any server whose digest differed in
two consecutive rounds (one round can catch a change in flight).
"""

from __future__ import annotations

import itertools
import logging

log = logging.getLogger("relay.netsplit")


class Verifier:
    def __init__(self, core):
        self.core = core
        self.links = core.links
        self.rounds: dict[int, dict] = {}
        self._ids = itertools.count(1)
        self.suspects: dict[str, int] = {}
        self.desyncs_logged = 0

    def summary(self) -> dict:
        net = self.core.net
        return {"digest": self.links.digest(), "users": len(net.users), "channels": len(net.channels),
                "servers": len(self.links.tree)}

    def start(self, now: float) -> dict:
        rid = next(self._ids)
        me = self.links.me.id
        expected = sorted(self.links.tree.servers())
        r = {"id": rid, "started": now, "expected": expected, "answers": {me: self.summary()}}
        self.rounds[rid] = r
        for old in [k for k in self.rounds if k < rid - 10]:
            del self.rounds[old]
        self.links.send_extension("VERIFY_REQ", {"round": rid, "asker": me})
        return r

    def on_frame(self, ftype: str, origin: str, payload: dict, from_link) -> bool | None:
        if ftype == "VERIFY_REQ":
            self.links.send_extension("VERIFY", {"round": payload["round"], "server": self.links.me.id,
                                                 **self.summary()}, servers={payload["asker"]})
            return True
        if ftype == "VERIFY":
            r = self.rounds.get(payload.get("round"))
            if r is not None:
                r["answers"][payload["server"]] = {k: payload[k] for k in ("digest", "users", "channels", "servers")}
            return True
        return None

    def result(self, rid: int) -> dict:
        r = self.rounds.get(rid)
        if r is None:
            raise KeyError(rid)
        mine = r["answers"][self.links.me.id]["digest"]
        names = self.core.net.server_name
        differ = sorted(names(s) for s, a in r["answers"].items() if a["digest"] != mine)
        missing = sorted(names(s) for s in r["expected"] if s not in r["answers"])
        return {"round": rid, "complete": not missing, "missing": missing, "differ": differ,
                "answers": {names(s): a for s, a in r["answers"].items()}, "converged": not missing and not differ}

    def periodic(self, now: float) -> None:
        """Judge the last round, then start the next."""
        if self.rounds:
            last = self.result(max(self.rounds))
            for name in last["differ"]:
                self.suspects[name] = self.suspects.get(name, 0) + 1
                if self.suspects[name] >= 2:
                    self.desyncs_logged += 1
                    log.warning("anti-entropy: the state digest of %s differs from ours in consecutive rounds "
                                "(%s)", name, last["answers"].get(name))
            for name in list(self.suspects):
                if name not in last["differ"]:
                    del self.suspects[name]
        self.start(now)
