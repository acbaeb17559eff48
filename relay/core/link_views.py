"""What the link layer shows operators and verification: links, the map, the state digest."""

from __future__ import annotations

import hashlib
import json

from topology.tree import render_map


class LinkViews:
    """Read-only views over a LinkLayer's peers, tree and network (mixed into it)."""

    def hops(self, sid: str) -> int:
        return self.tree.server(sid).hops if sid in self.tree else 0

    def summary(self) -> list[dict]:
        out = []
        for s in self.peers.values():
            out.append({"name": s.peer_name, "id": s.peer_id, "role": s.role, "lag": s.lag,
                        "up_since": s.established_at, "burst_done": s.burst_done,
                        "frames_in": dict(s.frames_in), "frames_out": dict(s.frames_out),
                        "bytes_in": s.t.bytes_in if hasattr(s.t, "bytes_in") else None,
                        "bytes_out_by_type": dict(s.bytes_out)})
        return sorted(out, key=lambda d: d["name"])

    def map_data(self, now: float) -> dict:
        def node(n) -> dict:
            s = self.peers.get(n.id)
            d = {"id": n.id, "name": n.name, "hops": n.hops,
                 "users": sum(1 for u in self.net.users.values() if u.server == n.id),
                 "children": [node(c) for c in n.children]}
            if s is not None:
                d["lag"] = s.lag
                d["uptime"] = round(now - s.established_at, 3)
            return d
        return node(self.tree.map())

    def map_text(self, now: float) -> str:
        lines = render_map(self.tree.map()).splitlines()
        out = []
        for line in lines:
            sid = line.rsplit("[", 1)[1].split("]")[0]
            s = self.peers.get(sid)
            extra = ""
            if s is not None:
                lag = f"{s.lag * 1000:.1f}ms" if s.lag is not None else "?"
                extra = f"  lag {lag} up {now - s.established_at:.0f}s"
            out.append(line + extra)
        return "\n".join(out)

    def state(self) -> dict:
        """The network state as this server sees it: equal on every server once converged."""
        edges = sorted(sorted((sid, self.tree.server(sid).parent)) for sid in self.tree.servers()
                       if self.tree.server(sid).parent is not None)
        servers = sorted([sid, self.net.server_name(sid)] for sid in self.tree.servers())
        users = sorted([u.uid, u.nick, u.ident, u.host, u.realname, u.server, u.account, u.away,
                        "".join(sorted(u.modes))] for u in self.net.users.values())
        chans = []
        for ch in sorted(self.net.channels.values(), key=lambda c: c.key_name):
            chans.append([ch.name, int(ch.ts), "".join(sorted(ch.modes)), ch.key, ch.limit, ch.topic,
                          sorted([u.uid, "".join(sorted(st))] for u, st in ch.members.items()),
                          {m: sorted(b.mask for b in lst) for m, lst in ch.lists.items()}])
        return {"servers": servers, "links": edges, "users": users, "channels": chans}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.state(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()

