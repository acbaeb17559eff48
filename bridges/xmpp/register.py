"""XEP-0077 in-band registration: a new account before authentication, a password change and the
account's removal after it.

Before authentication the stream offers `<register xmlns='http://jabber.org/features/iq-register'/>`
(on a secure stream, or any when STARTTLS is not required) and answers `jabber:iq:register` get/set;
the account is made by `core.register_account`, so it logs in with every protocol at once. Whether a
client may register is the access rule `register` (relay/core/acl.py), decided on its address, and
denied unless the operator allows it, e.g. for everyone:

    access_rules:
      register: [allow: all]

A refused registration is `not-allowed`; one stream registers at most one account. After
authentication, `<username/><password/>` changes the account's password and `<remove/>` removes the
account (its streams are closed with not-authorized, §3.2).
"""

from __future__ import annotations

import weakref

from lxml import etree

from relay.core.accounts import AccountError

from . import namespaces as ns
from .jid import JidError, prep_localpart
from .stanza import element

REGISTER = "jabber:iq:register"
FEATURE = "http://jabber.org/features/iq-register"
_Q = "{%s}" % REGISTER


def _reply(iq: etree._Element, payload: etree._Element | None = None) -> etree._Element:
    out = element("iq", {"type": "result", "id": iq.get("id")})
    if payload is not None:
        out.append(payload)
    return out


def _error(iq: etree._Element, kind: str, condition: str, text: str | None = None) -> etree._Element:
    out = element("iq", {"type": "error", "id": iq.get("id")})
    err = etree.SubElement(out, "{%s}error" % ns.CLIENT, type=kind)
    etree.SubElement(err, "{%s}%s" % (ns.STANZA_ERRORS, condition), nsmap={None: ns.STANZA_ERRORS})
    if text:
        etree.SubElement(err, "{%s}text" % ns.STANZA_ERRORS, nsmap={None: ns.STANZA_ERRORS}).text = text
    return out


def _query(*children: tuple[str, str | None]) -> etree._Element:
    q = etree.Element(_Q + "query", nsmap={None: REGISTER})
    for name, text in children:
        etree.SubElement(q, _Q + name).text = text
    return q


def install(module, svc) -> None:
    core, r = module.core, svc.router
    registered = weakref.WeakSet()     # streams that made an account (one each)

    def allowed(session) -> bool:
        return core.acl.allowed("register", core.subject(None, session.t.peer_host))

    def usable(session, secure: bool) -> bool:
        return secure or not svc.opts.require_starttls

    def features(session, secure: bool) -> list:
        if not usable(session, secure) or not allowed(session):
            return []
        return [etree.Element("{%s}register" % FEATURE, nsmap={None: FEATURE})]

    # Before authentication: <iq type='get'><query xmlns='jabber:iq:register'/></iq>, then
    # <iq type='set'><query xmlns='jabber:iq:register'><username>U</username><password>P</password></query></iq>
    def preauth(session, iq: etree._Element, secure: bool):
        if len(iq) != 1 or iq[0].tag != _Q + "query" or iq.get("type") not in ("get", "set"):
            return None                                # not ours: refused as a stanza before auth
        if not usable(session, secure):
            return _error(iq, "cancel", "not-allowed", "registration needs a secure stream")
        if not allowed(session):
            return _error(iq, "cancel", "not-allowed", "registration is not allowed from here")
        if iq.get("type") == "get":
            return _reply(iq, _query(("instructions", "Choose a user name and password."), ("username", None),
                                     ("password", None)))
        if session in registered or session.t.closing:
            return _error(iq, "cancel", "not-allowed", "one account per stream")
        q = iq[0]
        if q.find(_Q + "remove") is not None:
            return _error(iq, "auth", "not-authorized", "log in to remove an account")
        username, password = q.findtext(_Q + "username"), q.findtext(_Q + "password")
        if not username or not password:
            return _error(iq, "modify", "not-acceptable", "a user name and a password are needed")
        try:
            name = prep_localpart(username)
        except JidError:
            return _error(iq, "modify", "jid-malformed", "not a valid user name")
        if core.accounts.get(name) is not None:
            return _error(iq, "cancel", "conflict", "that user name is taken")
        try:
            core.register_account(name, password, core.now())
        except AccountError as e:
            return _error(iq, "modify", "not-acceptable", str(e))
        registered.add(session)
        return _reply(iq)

    # After authentication: <iq type='get'><query xmlns='jabber:iq:register'/></iq>
    def get(ev):
        r.result(ev.session, ev.stanza, _query(("registered", None), ("username", ev.session.account)))
        return True

    # <iq type='set'><query xmlns='jabber:iq:register'><username>U</username><password>P</password></query></iq>
    # <iq type='set'><query xmlns='jabber:iq:register'><remove/></query></iq>
    def set_(ev):
        s, iq = ev.session, ev.stanza
        q = iq[0]
        if q.find(_Q + "remove") is not None:
            r.result(s, iq)
            for x in list(r.sessions_of(s.jid.bare)):
                x.stream_error("not-authorized", "account removed")
            try:
                core.unregister_account(s.account, ev.now)
            except AccountError:
                pass
            return True
        username, password = q.findtext(_Q + "username"), q.findtext(_Q + "password")
        if username is not None and username.lower() != s.account.lower():
            r.error(s, iq, "modify", "bad-request")
            return True
        if not password:
            r.error(s, iq, "modify", "not-acceptable")
            return True
        core.change_account(core.accounts.set_password(s.account, password, ev.now))
        r.result(s, iq)
        return True

    module.hook("xmpp_preauth_iq", preauth)
    module.hook(f"iq-get/self/{REGISTER}:query", get)
    module.hook(f"iq-set/self/{REGISTER}:query", set_)
    module.hook(f"iq-get/host/{REGISTER}:query", get)
    module.hook(f"iq-set/host/{REGISTER}:query", set_)
    module.add_item("xmpp-stream-feature", features)
    module.add_item("xmpp-feature", REGISTER)
