"""XEP-0012 last activity: the server's uptime (to the domain), an account's idle seconds while it is
online and the time since its last logout (with the status of its last unavailable presence) while it
is not. An account's is told only to itself and to those it shares its presence with (subscription
`from` or `both`, §4); others get forbidden. Queries to a full JID are the client's (routed as any iq).

Logouts are kept in the `xmpp_last` store, all of it in memory (one row per account), and are the
same on every server: each goes over the tree (`XMPP_LAST`, the later wins), and a link-up sends
them all (they are small).

    xmpp_last(account PK (case-folded), logout {real}, status)
"""

from __future__ import annotations

from lxml import etree

from relay.core.storage import Op, Schema

from .stanza import element

LAST = "jabber:iq:last"
FRAME = "XMPP_LAST"
_STATUS = "{jabber:client}status"

# What the store loads when it opens (Schema.loads: each ? is the server's id).
_LOAD = "SELECT account, logout, status FROM xmpp_last"

SCHEMA = Schema("xmpp_last", ("""
CREATE TABLE xmpp_last (
    account TEXT PRIMARY KEY,
    logout {real} NOT NULL,
    status TEXT NOT NULL
);
""",), tables=("xmpp_last",), loads=(_LOAD,))

_PUT = ("INSERT INTO xmpp_last(account, logout, status) VALUES (?,?,?) "
        "ON CONFLICT(account) DO UPDATE SET logout = excluded.logout, status = excluded.status")


def _answer(r, ev, seconds: float, status: str = "", from_: str | None = None) -> None:
    q = etree.Element("{%s}query" % LAST, nsmap={None: LAST}, seconds=str(max(0, int(seconds))))
    if status:
        q.text = status
    reply = element("iq", {"type": "result", "id": ev.stanza.get("id"), "from": from_})
    reply.append(q)
    r.to_full(ev.session, reply)


def install(module, svc) -> None:
    core, r = module.core, svc.router
    storage = core.storage
    storage.open_store(SCHEMA)
    logouts = {k: (t, st) for k, t, st in storage.load(_LOAD)}
    leaving: dict[str, str] = {}            # account -> the status of the unavailable presence it sent

    # <iq type='get' to='domain'><query xmlns='jabber:iq:last'/></iq>
    def uptime(ev):
        _answer(r, ev, ev.now - core.started, from_=svc.domain)
        return True

    # <iq type='get' to='user@domain'><query xmlns='jabber:iq:last'/></iq>
    def account_last(ev):
        s, to = ev.session, ev.to.bare
        name = to.local
        if core.accounts.get(name) is None:
            r.error(s, ev.stanza, "cancel", "service-unavailable")
            return True
        if name.lower() != s.account.lower():
            item = svc.roster.item(name, str(s.jid.bare))
            if item is None or item["subscription"] not in ("from", "both"):
                r.error(s, ev.stanza, "auth", "forbidden")
                return True
        u = svc.network_user(to)
        if u is not None and u.proto == "xmpp" and (u.account or "").lower() == name.lower():
            _answer(r, ev, ev.now - u.last_active, from_=str(to))     # online: idle seconds
        elif name.lower() in logouts:
            t, status = logouts[name.lower()]
            _answer(r, ev, ev.now - t, status, from_=str(to))
        else:
            r.error(s, ev.stanza, "cancel", "item-not-found")
        return True

    # <presence type='unavailable'><status>gone</status></presence>
    def unavailable(ev):
        if ev.stanza.get("type") == "unavailable":
            leaving[ev.session.account.lower()] = ev.stanza.findtext(_STATUS) or ""
        return None

    def disconnected(user, reason):
        if user.proto != "xmpp" or user.session is None or not user.account:
            return
        key = user.account.lower()
        now = core.now()
        logouts[key] = (now, leaving.pop(key, ""))
        storage.queue.put(Op(_PUT, (key, *logouts[key])))
        send([[key, *logouts[key]]])

    def send(rows) -> None:
        router = core.net.router
        if router is not None and rows:
            router.send_extension(FRAME, {"logouts": rows}, None)

    def extension(ftype, origin, payload, from_link=None):
        if ftype != FRAME:
            return None
        try:
            rows = [(str(k), float(t), str(st)[:1024]) for k, t, st in payload["logouts"]]
        except (KeyError, TypeError, ValueError):
            return True
        for key, t, status in rows:
            if key == key.lower() and core.accounts.get(key) is not None and t > logouts.get(key, (-1.0, ""))[0]:
                logouts[key] = (t, status)
                storage.queue.put(Op(_PUT, (key, t, status)))
        return True

    def removed(name):
        if logouts.pop(name.lower(), None) is not None:
            storage.queue.write("DELETE FROM xmpp_last WHERE account = ?", (name.lower(),))

    module.hook(f"iq-get/host/{LAST}:query", uptime)
    module.hook(f"iq-get/bare/{LAST}:query", account_last)
    module.hook(f"iq-get/self/{LAST}:query", account_last)
    module.hook("presence/initial", unavailable)
    module.hook("client_disconnected", disconnected)
    module.hook("account_removed", removed)
    module.hook("link_up", lambda peer_id, *rest: send([[k, t, st] for k, (t, st) in logouts.items()]))
    module.hook("link_extension", extension)
    module.add_item("xmpp-feature", LAST)
