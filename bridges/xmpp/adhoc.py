"""XEP-0050 ad-hoc commands on the domain: `ping` for everyone, and for operators every command of
the operator table (`core.admin`, what relayctl and the shell run), each with an XEP-0004 form for
its arguments and the command's Reply text as the result note.

An operator is an account the access rule `xmpp.adhoc_admin_rule` (default `admin`) allows, decided
on its account, groups and address (relay/core/acl.py: denied unless a rule allows), or whose network
user is an IRC operator (+o). For example:

    acl:
      admins: {account: [alice]}
    access_rules:
      admin: [allow: admins]

A command without arguments runs at `execute`; one with arguments answers with a form first (one
text-single field per argument; NAME... takes words), and runs when the form is submitted (a
`complete`/`execute` action, or the `<x type='submit'/>`). Half-done sessions expire after
`SESSION_TTL` seconds; an account has at most `MAX_SESSIONS` of them.
"""

from __future__ import annotations

import secrets

from lxml import etree

from relay.core.admin import AdminError
from relay.core.builtin_admin import AdminContext

from .routing import DISCO_INFO, DISCO_ITEMS
from .stanza import element

COMMANDS = "http://jabber.org/protocol/commands"
DATA = "jabber:x:data"
PING_NODE = "ping"
SESSION_TTL = 600.0
MAX_SESSIONS = 10
_C, _X = "{%s}" % COMMANDS, "{%s}" % DATA


def _field_name(arg) -> str:
    return arg.name.lower().lstrip("-")


def form_of(spec) -> etree._Element:
    """The XEP-0004 form of an operator command's arguments."""
    x = etree.Element(_X + "x", nsmap={None: DATA}, type="form")
    etree.SubElement(x, _X + "title").text = spec.syntax
    if spec.help:
        etree.SubElement(x, _X + "instructions").text = spec.help
    for a in spec.args:
        f = etree.SubElement(x, _X + "field", var=_field_name(a), type="text-single",
                             label=a.name + ("..." if a.rest else ""))
        if not a.optional and not a.rest:
            etree.SubElement(f, _X + "required")
    return x


def argv_of(spec, form: etree._Element | None) -> list[str]:
    """The words a submitted form gives the command (AdminError if a required one is missing)."""
    values: dict[str, str] = {}
    if form is not None:
        for f in form.findall(_X + "field"):
            values[f.get("var", "")] = " ".join(v.text or "" for v in f.findall(_X + "value")).strip()
    words = list(spec.words)
    for a in spec.args:
        v = values.get(_field_name(a), "")
        if a.rest:
            words.extend(v.split())
        elif v:
            if a.name.startswith("--"):
                words.append(a.name)         # a literal flag: any non-empty value sets it
            else:
                words.append(v)
        elif not a.optional:
            raise AdminError(f"{a.name} is required; usage: {spec.syntax}")
        else:
            break                            # an optional one left out ends the words
    return words


def install(module, svc) -> None:
    core, r = module.core, svc.router
    sessions: dict[str, tuple[str, str, float]] = {}     # sessionid -> (account, node, started)

    def is_operator(s) -> bool:
        u = s.member.user if s.member is not None else None
        if u is not None and "o" in u.modes:
            return True
        return core.acl.allowed(svc.opts.adhoc_admin_rule, core.subject(s.account, s.t.peer_host))

    def nodes(s) -> dict[str, object]:
        """node -> the operator command's spec (None for ping), as `s` may see them."""
        out: dict[str, object] = {PING_NODE: None}
        if is_operator(s):
            for name, cmd in sorted(core.admin.commands.items()):
                out[name] = cmd.spec
        return out

    def command_el(node: str, status: str, sessionid: str | None = None) -> etree._Element:
        c = etree.Element(_C + "command", nsmap={None: COMMANDS}, node=node, status=status)
        if sessionid:
            c.set("sessionid", sessionid)
        return c

    def note(c: etree._Element, text: str, kind: str = "info") -> None:
        etree.SubElement(c, _C + "note", type=kind).text = text or ("done" if kind == "info" else "failed")

    # <iq type='get' to='domain'><query xmlns='...disco#items' node='http://jabber.org/protocol/commands'/></iq>
    def items(ev):
        if ev.stanza[0].get("node") != COMMANDS:
            return None
        q = etree.Element("{%s}query" % DISCO_ITEMS, nsmap={None: DISCO_ITEMS}, node=COMMANDS)
        for node, spec in nodes(ev.session).items():
            etree.SubElement(q, "{%s}item" % DISCO_ITEMS, jid=svc.domain, node=node,
                             name="Ping" if spec is None else spec.help or spec.syntax)
        r.result(ev.session, ev.stanza, q)
        return True

    # <iq type='get' to='domain'><query xmlns='...disco#info' node='NODE'/></iq>
    def info(ev):
        node = ev.stanza[0].get("node")
        if node != COMMANDS and node not in nodes(ev.session):
            return None
        q = etree.Element("{%s}query" % DISCO_INFO, nsmap={None: DISCO_INFO}, node=node)
        if node == COMMANDS:
            etree.SubElement(q, "{%s}identity" % DISCO_INFO, category="automation", type="command-list")
        else:
            etree.SubElement(q, "{%s}identity" % DISCO_INFO, category="automation", type="command-node",
                             name=node)
        for f in (COMMANDS, DATA):
            etree.SubElement(q, "{%s}feature" % DISCO_INFO, var=f)
        r.result(ev.session, ev.stanza, q)
        return True

    # <iq type='set' to='domain'><command xmlns='http://jabber.org/protocol/commands' node='NODE'
    #   [action='execute|complete|next|cancel'] [sessionid='S']>[<x xmlns='jabber:x:data' type='submit'/>]
    # </command></iq>
    def execute(ev):
        s, iq, now = ev.session, ev.stanza, ev.now
        cmd = iq[0]
        node, action, sid = cmd.get("node", ""), cmd.get("action", "execute"), cmd.get("sessionid")
        for k in [k for k, v in sessions.items() if now - v[2] > SESSION_TTL]:
            del sessions[k]
        visible = nodes(s)
        if node not in visible:
            r.error(s, iq, "cancel", "item-not-found" if node not in core.admin.commands and node != PING_NODE
                    else "forbidden")
            return True
        if sid is not None and sessions.get(sid, ("", "", 0))[:2] != (s.account, node):
            r.error(s, iq, "modify", "bad-request")
            return True
        if action == "cancel":
            sessions.pop(sid, None)
            r.result(s, iq, command_el(node, "canceled", sid))
            return True
        spec = visible[node]
        if spec is None:
            c = command_el(node, "completed")
            note(c, "Pong")
            r.result(s, iq, c)
            return True
        form = cmd.find(_X + "x")
        if spec.args and sid is None and (form is None or form.get("type") != "submit"):
            if sum(1 for v in sessions.values() if v[0] == s.account) >= MAX_SESSIONS:
                r.error(s, iq, "wait", "resource-constraint")
                return True
            sid = secrets.token_hex(8)
            sessions[sid] = (s.account, node, now)
            c = command_el(node, "executing", sid)
            actions = etree.SubElement(c, _C + "actions", execute="complete")
            etree.SubElement(actions, _C + "complete")
            c.append(form_of(spec))
            r.result(s, iq, c)
            return True
        sessions.pop(sid, None)
        c = command_el(node, "completed", sid)
        try:
            reply = core.admin.dispatch(argv_of(spec, form), AdminContext(core, now, peer=f"xmpp:{s.jid}"))
        except AdminError as e:
            note(c, str(e), "error")
        except Exception as e:              # a handler's bug: the operator hears of it, the server goes on
            module.log.exception("ad-hoc command %s raised", node)
            note(c, f"internal error: {type(e).__name__}: {e}", "error")
        else:
            note(c, reply.text, "info" if reply.status == 0 else "error")
        r.result(s, iq, c)
        return True

    module.hook(f"iq-get/host/{DISCO_ITEMS}:query", items)
    module.hook(f"iq-get/host/{DISCO_INFO}:query", info)
    module.hook(f"iq-set/host/{COMMANDS}:command", execute)
    module.add_item("xmpp-feature", COMMANDS)
