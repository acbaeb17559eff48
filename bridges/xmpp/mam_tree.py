"""XEP-0313 across the tree: a MAM query on one server finds what the account archived on every server.

Archives stay where they are written. A query on a server of a tree fans out: every other XMPP
server (component_net.py knows which) gets it as a link frame, reads its own archive of the
account (at most the page size + 1 rows, in the query's order) and answers; the asking server
reads its own meanwhile. The rows are merged by
(time, archive id), duplicates removed (a message archived on two servers has the same id there,
mam.py), and the page answered with RSM as a single server does, from a continuation: the core
never waits. A server that has not answered within `xmpp.mam_tree_timeout` seconds (a core timer)
is left out, and the result says `complete="false"`. In a tree the count is the sum of the servers'
counts less the duplicates seen, and `<first>` has no index.

Cursors are archive ids; an id made by `mam.new_mark` says its time, so every server can page from
it. An older archive's random id is looked up in this server's archive first (not found: as an
unknown id on one server).

Frames (module frames in ENCAP):

    XMPP_MAM_QUERY {qid, account, spec}
        to every other server of the tree. spec: {with: [with_bare | with_full, jid] | null,
        start, end: time | null, lo, hi: key | null (after-id, before-id), after, before: key |
        null (the RSM cursors), backward: bool, limit: int}; key = [time, id].
    XMPP_MAM_ROWS {qid, rows: [[time, id, stanza], ...], total, more: bool [, failed: true]}
        the answer, to the asking server only, in frames of bounded size (`more`: another follows).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from .jid import JidError, parse_jid
from .mam import key_of, parse_time

QUERY, ROWS = "XMPP_MAM_QUERY", "XMPP_MAM_ROWS"
_COLUMNS = ("with_bare", "with_full")
_MAX_LIMIT = 1000


def _key(v):
    if isinstance(v, list) and len(v) == 2 and isinstance(v[0], (int, float)) and not isinstance(v[0], bool) \
            and isinstance(v[1], str):
        return float(v[0]), v[1]
    return None


def _time(v):
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


@dataclass
class Pending:
    """A query of a client here, waiting for the servers of the tree."""
    r: object
    s: object
    iq: object
    qid: str | None
    page: dict
    waiting: set[str]
    rows: dict = field(default_factory=dict)        # archive id -> (time, id, stanza)
    counted: set = field(default_factory=set)       # servers whose count is in `total`
    total: int = 0
    dups: int = 0
    partial: bool = False
    timer: object = None


class TreeQueries:
    def __init__(self, archive, module):
        self.archive, self.svc, self.core = archive, archive.svc, archive.core
        self.module = module
        self.me = self.core.config.server.id
        self.pending: dict[str, Pending] = {}
        self.stats = {"mam_tree_queries": 0, "mam_tree_answered": 0, "mam_tree_timeouts": 0}
        module.hook("link_extension", self.on_frame)

    @property
    def links(self):
        return getattr(self.core.net, "router", None)

    def others(self) -> set[str]:
        """The other servers of the tree with an XMPP service (and so an archive)."""
        return self.svc.component_domains.xmpp_servers() - {self.me}

    # ---------------------------------------------------------------- asking
    def query(self, r, s, iq, qid, page: dict) -> None:
        """A client's query (parsed by `Archive.sql`): its cursors resolved to keys, then fanned out."""
        fields = page["fields"]
        ids = {name: v for name, v in (("lo", fields.get("after-id")), ("hi", fields.get("before-id")),
                                       ("after", page["after"]), ("before", page["before"])) if v}
        keys = {name: key_of(v) for name, v in ids.items()}
        unknown = sorted({ids[n] for n, k in keys.items() if k is None})
        if not unknown:
            return self._fan_out(r, s, iq, qid, page, keys)
        # An older archive's id: its time from this server's archive.
        marks = ",".join("?" * len(unknown))

        def found(rows):
            if rows is None:
                r.error(s, iq, "wait", "internal-server-error")
                return
            known = {sid: (float(t), sid) for sid, t in rows}
            for name, v in ids.items():
                if keys[name] is None:
                    keys[name] = known.get(v)
            if any(keys.get(n) is None for n in ("after", "before") if n in ids):
                self.archive.fin(r, s, iq, qid, page, [], True)     # an unknown RSM cursor
                return
            if any(keys.get(n) is None for n in ("lo", "hi") if n in ids):
                self.archive.fin(r, s, iq, qid, page, [], False)    # after-id/before-id unknown: nothing
                return
            self._fan_out(r, s, iq, qid, page, keys)
        self.core.storage.read(f"SELECT id, stamp FROM xmpp_archive WHERE server = ? AND account = ? AND id IN "
                               f"({marks})", (self.me, s.account, *unknown), found)

    def _fan_out(self, r, s, iq, qid, page: dict, keys: dict) -> None:
        fields = page["fields"]
        w = None
        if fields.get("with"):
            j = parse_jid(fields["with"])               # checked by Archive.sql
            w = ["with_full" if j.resource else "with_bare", str(j)]
        spec = {"with": w, "start": parse_time(fields["start"]) if fields.get("start") else None,
                "end": parse_time(fields["end"]) if fields.get("end") else None,
                **{n: list(keys[n]) if keys.get(n) else None for n in ("lo", "hi", "after", "before")},
                "backward": page["backward"], "limit": page["max"]}
        others = self.others()
        tag = secrets.token_hex(8)
        p = self.pending[tag] = Pending(r, s, iq, qid, page, others | {self.me})
        self.stats["mam_tree_queries"] += 1
        if others:
            self.links.send_extension(QUERY, {"qid": tag, "account": s.account, "spec": spec}, others)
        p.timer = self.module.timer(self.svc.opts.mam_tree_timeout, lambda now: self._finish(tag))
        sql, args = self.sql(self.me, s.account, spec)
        self.core.storage.read(sql, args, lambda rows: self._local(tag, rows))

    def _local(self, tag: str, rows) -> None:
        if rows is None:
            self._got(tag, self.me, [], 0, False, True)
        else:
            self._got(tag, self.me, [(float(t), sid, text) for t, sid, text, _ in rows],
                      int(rows[0][3]) if rows else 0, False, False)

    def _got(self, tag: str, sid: str, rows, total: int, more: bool, failed: bool) -> None:
        p = self.pending.get(tag)
        if p is None or sid not in p.waiting:
            return                                      # late (after the timeout), or not asked
        for row in rows:
            if row[1] in p.rows:
                p.dups += 1
            else:
                p.rows[row[1]] = row
        if sid not in p.counted:
            p.counted.add(sid)
            p.total += total
        p.partial |= failed
        if not more:
            p.waiting.discard(sid)
            if not p.waiting:
                self._finish(tag)

    def _finish(self, tag: str) -> None:
        p = self.pending.pop(tag, None)
        if p is None:
            return
        if p.timer is not None:
            p.timer.cancel()
        if p.waiting:
            self.stats["mam_tree_timeouts"] += 1
        backward = p.page["backward"]
        merged = sorted(p.rows.values(), key=lambda x: (x[0], x[1]), reverse=backward)[:max(p.page["max"], 1) + 1]
        self.archive.fin(p.r, p.s, p.iq, p.qid, p.page, [(None, sid, t, text, None, None) for t, sid, text in merged],
                         False, partial=p.partial or bool(p.waiting), total=max(0, p.total - p.dups))

    # ---------------------------------------------------------------- answering
    @staticmethod
    def sql(server: str, account: str, spec: dict) -> tuple[str, tuple]:
        """This server's rows for a query: the page in its order (limit + 1), each with the count."""
        where, args = ["server = ?", "account = ?"], [server, account]
        if spec["with"] is not None:
            where.append(f"{spec['with'][0]} = ?")
            args.append(spec["with"][1])
        if spec["start"] is not None:
            where.append("stamp >= ?")
            args.append(spec["start"])
        if spec["end"] is not None:
            where.append("stamp <= ?")
            args.append(spec["end"])
        outer, outer_args = [], []
        for name, op, into, into_args in (("lo", ">", where, args), ("hi", "<", where, args),
                                          ("after", ">", outer, outer_args), ("before", "<", outer, outer_args)):
            k = spec[name]
            if k is not None:
                into.append(f"(stamp {op} ? OR (stamp = ? AND id {op} ?))")
                into_args += [k[0], k[0], k[1]]
        order = "DESC" if spec["backward"] else "ASC"
        sql = ("SELECT stamp, id, stanza, total FROM (SELECT stamp, id, stanza, COUNT(*) OVER () AS total "
               "FROM xmpp_archive WHERE " + " AND ".join(where) + ") AS q"
               + (" WHERE " + " AND ".join(outer) if outer else "") + f" ORDER BY stamp {order}, id {order} LIMIT ?")
        return sql, (*args, *outer_args, max(spec["limit"], 1) + 1)

    @staticmethod
    def clean_spec(spec) -> dict | None:
        """Another server's query, with only what a query has; None if it is not one."""
        if not isinstance(spec, dict):
            return None
        w = spec.get("with")
        if w is not None:
            if not (isinstance(w, list) and len(w) == 2 and w[0] in _COLUMNS and isinstance(w[1], str)):
                return None
            try:
                parse_jid(w[1])
            except JidError:
                return None
        out = {"with": w, "backward": spec.get("backward")}
        if not isinstance(out["backward"], bool):
            return None
        for name in ("start", "end"):
            out[name] = _time(spec.get(name))
            if spec.get(name) is not None and out[name] is None:
                return None
        for name in ("lo", "hi", "after", "before"):
            out[name] = _key(spec.get(name))
            if spec.get(name) is not None and out[name] is None:
                return None
        limit = spec.get("limit")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            return None
        out["limit"] = min(limit, _MAX_LIMIT)
        return out

    def on_frame(self, ftype: str, origin: str, payload, from_link: str | None):
        if ftype not in (QUERY, ROWS):
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("qid"), str):
            return True
        if ftype == QUERY:
            spec, account = self.clean_spec(payload.get("spec")), payload.get("account")
            if spec is not None and isinstance(account, str) and account:
                sql, args = self.sql(self.me, account, spec)
                self.core.storage.read(sql, args, lambda rows: self._answer(origin, payload["qid"], rows))
            return True
        rows, total = payload.get("rows"), payload.get("total")
        good = [(float(x[0]), x[1], x[2]) for x in rows if isinstance(x, list) and len(x) == 3
                and _key(x[:2]) is not None and isinstance(x[2], str)] if isinstance(rows, list) else []
        self._got(payload["qid"], origin, good, total if isinstance(total, int) and total >= 0 else 0,
                  payload.get("more") is True, payload.get("failed") is True)
        return True

    def _answer(self, origin: str, qid: str, rows) -> None:
        """Our rows for another server's query, in frames that stay well under the link's limit."""
        links = self.links
        if links is None:
            return
        if rows is None:
            links.send_extension(ROWS, {"qid": qid, "rows": [], "total": 0, "more": False, "failed": True}, {origin})
            return
        self.stats["mam_tree_answered"] += 1
        total = int(rows[0][3]) if rows else 0
        budget = links.codec.max_frame // 3
        chunk, size = [], 0
        for t, sid, text, _ in rows:
            if chunk and size + len(text) * 2 > budget:
                links.send_extension(ROWS, {"qid": qid, "rows": chunk, "total": total, "more": True}, {origin})
                chunk, size = [], 0
            chunk.append([float(t), sid, text])
            size += len(text) * 2 + 64
        links.send_extension(ROWS, {"qid": qid, "rows": chunk, "total": total, "more": False}, {origin})
