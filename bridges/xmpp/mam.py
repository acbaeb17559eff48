"""XEP-0313 message archive management (urn:xmpp:mam:2) with XEP-0059 result set paging.

Every chat or normal message with a body that an account here sends, or that reaches its
resources here, is archived for that account (store `xmpp_archive`, written as `Op`s). A message
reaching the account gets the archive's id as an XEP-0359 `<stanza-id by='account' id=.../>`
(any such element with the same `by` that came with it is removed first: only the archive
says it). Each server archives what passes through it for its own sessions' accounts; a query
reads this server's archive, and in a tree the archives of every server (mam_tree.py: fanned out,
merged by (time, id)). An archive id is `<time in µs, hex>-<random>`, so a cursor says where it
is in time on any server; a message that reaches the account on two servers is archived on both
with the same id and time (its sender's server gives them with the XMPP_STANZA frame: `mark`).

A query (`<iq type='set'><query xmlns='urn:xmpp:mam:2' queryid=...>`, with a jabber:x:data form of
`with`, `start`, `end`, `before-id`, `after-id`, and an RSM `<set>` of `max`, `after`, `before`) is one
asynchronous read through `core.storage.read` (the core never waits): the matching messages come
as `<result>` messages (forwarded, with their delay), then the iq result's `<fin complete=...>`
with the page's first (and its index), last and the count of the whole result set. Pages hold at
most `xmpp.mam_max_page` messages. Preferences (`<prefs default=.../>`): always (the default),
roster or never, kept per account in the store.

Schema (store `xmpp_archive`, version 1):

    xmpp_archive(server, account, seq, id, stamp, with_bare, with_full, outgoing, stanza; PK (server, seq))
        id: the stanza-id given out; with_*: the other party; outgoing: 1 if the account sent it
    xmpp_archive_prefs(server, account, dflt; PK (server, account))
"""

from __future__ import annotations

import secrets
from datetime import datetime, timezone

from lxml import etree

from relay.core.storage import Op, Schema

from . import namespaces as ns
from .jid import JidError, parse_jid
from .offline import DELAY, stamp_text
from .routing import Delivering, StanzaReceived

MAM = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"
SID = "urn:xmpp:sid:0"
DATA = "jabber:x:data"
FORWARD = "urn:xmpp:forward:0"
_C = "{%s}" % ns.CLIENT
_BODY = _C + "body"
_STANZA_ID = "{%s}stanza-id" % SID
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True, remove_pis=True)
PREFS = ("always", "never", "roster")

# What the store loads when it opens (Schema.loads: each ? is the server's id).
_LOAD_SEQ = "SELECT MAX(seq) FROM xmpp_archive WHERE server = ?"
_LOAD_PREFS = "SELECT account, dflt FROM xmpp_archive_prefs WHERE server = ?"

SCHEMA = Schema("xmpp_archive", ("""
CREATE TABLE xmpp_archive (
    server TEXT NOT NULL,
    account TEXT NOT NULL,
    seq {int} NOT NULL,
    id TEXT NOT NULL,
    stamp {real} NOT NULL,
    with_bare TEXT NOT NULL,
    with_full TEXT NOT NULL,
    outgoing INTEGER NOT NULL,
    stanza TEXT NOT NULL,
    PRIMARY KEY (server, seq)
);
CREATE UNIQUE INDEX xmpp_archive_id ON xmpp_archive(server, account, id);
CREATE INDEX xmpp_archive_account ON xmpp_archive(server, account, seq);
CREATE INDEX xmpp_archive_with ON xmpp_archive(server, account, with_bare, seq);
CREATE TABLE xmpp_archive_prefs (
    server TEXT NOT NULL,
    account TEXT NOT NULL,
    dflt TEXT NOT NULL,
    PRIMARY KEY (server, account)
);
""",), tables=("xmpp_archive", "xmpp_archive_prefs"), loads=(_LOAD_SEQ, _LOAD_PREFS))

_INSERT = ("INSERT INTO xmpp_archive(server, account, seq, id, stamp, with_bare, with_full, outgoing, stanza) "
           "VALUES (?,?,?,?,?,?,?,?,?)")
_PREFS = ("INSERT INTO xmpp_archive_prefs(server, account, dflt) VALUES (?,?,?) "
          "ON CONFLICT(server, account) DO UPDATE SET dflt = excluded.dflt")
_SEQ_OF = "(SELECT seq FROM xmpp_archive WHERE server = ? AND account = ? AND id = ?)"


def new_mark(now: float) -> tuple[str, float]:
    """A network-unique archive id and its time (whole microseconds, the same in the id)."""
    n = round(now * 1_000_000)
    return f"{n:x}-{secrets.token_urlsafe(6)}", n / 1_000_000


def key_of(sid: str) -> tuple[float, str] | None:
    """(time, id) of an id from `new_mark`; None for another (an older archive's random id)."""
    head, dash, _ = sid.partition("-")
    if not dash or not 0 < len(head) <= 16:
        return None
    try:
        return int(head, 16) / 1_000_000, sid
    except ValueError:
        return None


def archivable(el: etree._Element) -> bool:
    return el.get("type") in (None, "chat", "normal") and el.find(_BODY) is not None


def parse_time(text: str) -> float | None:
    """XEP-0082 date-time -> UNIX time (None if it is not one)."""
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.timestamp()


class BadQuery(Exception):
    pass


class Archive:
    def __init__(self, svc):
        self.svc, self.core = svc, svc.core
        self.storage = self.core.storage
        self.server = self.storage.server_id
        self.storage.open_store(SCHEMA)
        rows = self.storage.load(_LOAD_SEQ)
        self.seq = (rows[0][0] or 0) if rows else 0
        self.prefs = dict(self.storage.load(_LOAD_PREFS))
        self.archived = self.queries = 0
        self.tree = None                    # mam_tree.TreeQueries, set by setup

    # ---------------------------------------------------------------- archiving
    def wanted(self, account: str, other: str) -> bool:
        pref = self.prefs.get(account, "always")
        if pref == "never":
            return False
        return pref == "always" or self.svc.roster.item(account, other) is not None

    def add(self, account: str, el: etree._Element, other: str, outgoing: bool, now: float,
            mark: tuple[str, float] | None = None) -> str | None:
        try:
            peer = parse_jid(other)
        except JidError:
            return None
        if not self.wanted(account, str(peer.bare)):
            return None
        self.seq += 1
        sid, stamp = mark or new_mark(now)
        self.storage.queue.put(Op(_INSERT, (self.server, account, self.seq, sid, stamp, str(peer.bare), str(peer),
                                            int(outgoing), etree.tostring(el, encoding="unicode"))))
        self.archived += 1
        return sid

    def on_delivering(self, ev: Delivering):
        """A message reaching the account: archived, and stamped with its stanza-id."""
        el, bare = ev.stanza, str(ev.to)
        if not archivable(el) or ev.to.local is None:
            return None
        for old in el.findall(_STANZA_ID):
            if old.get("by") == bare:
                el.remove(old)
        blocking = getattr(self.svc, "blocking", None)
        if blocking is not None and blocking.blocks(ev.to.local, el.get("from") or ""):
            return None
        sid = self.add(ev.to.local, el, el.get("from") or "", False, ev.now, self.svc.federation.mark)
        if sid is not None:
            etree.SubElement(el, _STANZA_ID, nsmap={None: SID}, by=bare, id=sid)
        return None

    def on_sent(self, ev: StanzaReceived):
        """A message the account sends."""
        if archivable(ev.stanza) and ev.stanza.get("to"):
            self.add(ev.session.account, ev.stanza, ev.stanza.get("to"), True, ev.now)
        return None

    # ---------------------------------------------------------------- queries
    def query(self, ev: StanzaReceived):
        """<iq type='set'><query xmlns='urn:xmpp:mam:2' [queryid='Q']><x xmlns='jabber:x:data'>...</x>
        <set xmlns='http://jabber.org/protocol/rsm'><max/><after/><before/></set></query></iq>"""
        r, s, iq = ev.router, ev.session, ev.stanza
        try:
            sql, args, page = self.sql(s.account, iq[0])
        except BadQuery as e:
            r.error(s, iq, "modify", "bad-request")
            return True
        self.queries += 1
        qid = iq[0].get("queryid")
        if self.tree is not None and self.tree.others():
            self.tree.query(r, s, iq, qid, page)    # every server's archive
            return True
        self.storage.read(sql, args, lambda rows: self.answer(r, s, iq, qid, page, rows))
        return True

    def sql(self, account: str, q: etree._Element) -> tuple[str, tuple, dict]:
        where, args = ["server = ?", "account = ?"], [self.server, account]
        form = q.find("{%s}x" % DATA)
        fields = {}
        if form is not None:
            for f in form.findall("{%s}field" % DATA):
                fields[f.get("var")] = f.findtext("{%s}value" % DATA)
        if fields.get("with"):
            try:
                w = parse_jid(fields["with"])
            except JidError:
                raise BadQuery("with") from None
            where.append("with_full = ?" if w.resource else "with_bare = ?")
            args.append(str(w))
        for name, op in (("start", ">="), ("end", "<=")):
            if fields.get(name):
                t = parse_time(fields[name])
                if t is None:
                    raise BadQuery(name)
                where.append(f"stamp {op} ?")
                args.append(t)
        for name, op in (("after-id", ">"), ("before-id", "<")):
            if fields.get(name):
                where.append(f"seq {op} {_SEQ_OF}")
                args += [self.server, account, fields[name]]
        rsm = q.find("{%s}set" % RSM)
        limit = self.svc.opts.mam_max_page
        after = before = None
        if rsm is not None:
            text = rsm.findtext("{%s}max" % RSM)
            if text is not None:
                try:
                    limit = max(0, min(limit, int(text)))
                except ValueError:
                    raise BadQuery("max") from None
            after = rsm.findtext("{%s}after" % RSM)
            b = rsm.find("{%s}before" % RSM)
            before = (b.text or "") if b is not None else None
        outer, outer_args, order = [], [], "ASC"
        if after:
            outer.append(f"seq > {_SEQ_OF}")
            outer_args += [self.server, account, after]
        if before is not None:
            order = "DESC"                  # the page just before it (or the last page)
            if before:
                outer.append(f"seq < {_SEQ_OF}")
                outer_args += [self.server, account, before]
        sql = ("SELECT seq, id, stamp, stanza, total, pos FROM (SELECT seq, id, stamp, stanza, "
               "COUNT(*) OVER () AS total, ROW_NUMBER() OVER (ORDER BY seq) - 1 AS pos FROM xmpp_archive WHERE "
               + " AND ".join(where) + ") AS q" + (" WHERE " + " AND ".join(outer) if outer else "")
               + f" ORDER BY seq {order} LIMIT ?")
        return sql, (*args, *outer_args, max(limit, 1) + 1), {
            "max": limit, "backward": order == "DESC", "ref": after or before or None,
            "fields": fields, "after": after or None, "before": before or None}

    def answer(self, r, s, iq, qid, page: dict, rows) -> None:
        if s.jid is None or not s.established:
            return                          # gone while the archive was read
        if rows is None:
            r.error(s, iq, "wait", "internal-server-error")
            return
        if not rows and page["ref"]:
            self.storage.read("SELECT 1 FROM xmpp_archive WHERE server = ? AND account = ? AND id = ?",
                              (self.server, s.account, page["ref"]),
                              lambda found: self.fin(r, s, iq, qid, page, [], found == []))
            return
        self.fin(r, s, iq, qid, page, rows, False)

    def fin(self, r, s, iq, qid, page: dict, rows, unknown: bool, partial: bool = False, total: int | None = None) -> None:
        """The results and the iq result. `partial`: some servers of the tree did not answer; `total`
        the count when the rows do not carry it (then they carry no index either)."""
        if s.jid is None or not s.established:
            return
        if unknown:
            r.error(s, iq, "cancel", "item-not-found")
            return
        limit = page["max"]
        if total is None:
            total = rows[0][4] if rows else 0
        complete = len(rows) <= limit and not partial
        shown = rows[:limit]
        if page["backward"]:
            shown.reverse()
        bare = str(s.jid.bare)
        for seq, sid, stamp, text, _, _ in shown:
            try:
                msg = etree.fromstring(text, _PARSER)
            except etree.XMLSyntaxError:
                continue
            out = etree.Element(_C + "message", nsmap={None: ns.CLIENT})
            out.set("from", bare)
            res = etree.SubElement(out, "{%s}result" % MAM, nsmap={None: MAM}, id=sid)
            if qid:
                res.set("queryid", qid)
            fwd = etree.SubElement(res, "{%s}forwarded" % FORWARD, nsmap={None: FORWARD})
            etree.SubElement(fwd, "{%s}delay" % DELAY, nsmap={None: DELAY}, stamp=stamp_text(stamp))
            fwd.append(msg)
            r.to_full(s, out)
        fin = etree.Element("{%s}fin" % MAM, nsmap={None: MAM})
        if complete:
            fin.set("complete", "true")
        rset = etree.SubElement(fin, "{%s}set" % RSM, nsmap={None: RSM})
        if shown:
            first = etree.SubElement(rset, "{%s}first" % RSM)
            if shown[0][5] is not None:
                first.set("index", str(shown[0][5]))
            first.text = shown[0][1]
            etree.SubElement(rset, "{%s}last" % RSM).text = shown[-1][1]
        etree.SubElement(rset, "{%s}count" % RSM).text = str(total)
        r.result(s, iq, fin)

    # <iq type='get'><query xmlns='urn:xmpp:mam:2'/></iq>: the fields a query may have
    def form(self, ev: StanzaReceived):
        q = etree.Element("{%s}query" % MAM, nsmap={None: MAM})
        x = etree.SubElement(q, "{%s}x" % DATA, nsmap={None: DATA}, type="form")
        f = etree.SubElement(x, "{%s}field" % DATA, var="FORM_TYPE", type="hidden")
        etree.SubElement(f, "{%s}value" % DATA).text = MAM
        for var, typ in (("with", "jid-single"), ("start", "text-single"), ("end", "text-single"),
                         ("before-id", "text-single"), ("after-id", "text-single")):
            etree.SubElement(x, "{%s}field" % DATA, var=var, type=typ)
        ev.router.result(ev.session, ev.stanza, q)
        return True

    # <iq type='get'><prefs xmlns='urn:xmpp:mam:2'/></iq>; set: <prefs default='always|roster|never'>
    def prefs_iq(self, ev: StanzaReceived):
        s, iq = ev.session, ev.stanza
        if iq.get("type") == "set":
            dflt = iq[0].get("default")
            if dflt not in PREFS:
                ev.router.error(s, iq, "modify", "bad-request")
                return True
            self.prefs[s.account] = dflt
            self.storage.queue.put(Op(_PREFS, (self.server, s.account, dflt)))
        p = etree.Element("{%s}prefs" % MAM, nsmap={None: MAM}, default=self.prefs.get(s.account, "always"))
        etree.SubElement(p, "{%s}always" % MAM)
        etree.SubElement(p, "{%s}never" % MAM)
        ev.router.result(s, iq, p)
        return True


def setup(module, svc) -> None:
    from .mam_tree import TreeQueries
    archive = svc.mam = Archive(svc)
    archive.tree = TreeQueries(archive, module)
    svc.federation.new_mark = new_mark          # a message crossing to several servers: one id on all
    module.hook("message/delivering", archive.on_delivering, priority=10)   # before carbons copy it
    module.hook("message/bare", archive.on_sent)
    module.hook("message/full", archive.on_sent)
    module.hook(f"iq-set/self/{MAM}:query", archive.query)
    module.hook(f"iq-get/self/{MAM}:query", archive.form)
    module.hook(f"iq-get/self/{MAM}:prefs", archive.prefs_iq)
    module.hook(f"iq-set/self/{MAM}:prefs", archive.prefs_iq)
    for feature in (MAM, SID):
        module.add_item("xmpp-account-feature", feature)
