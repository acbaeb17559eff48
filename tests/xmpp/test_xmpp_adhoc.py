"""XEP-0050 ad-hoc commands in memory from bytes: ping for everyone, the operator table for operators
only (the access rule `admin`), a command with arguments through its XEP-0004 form, errors as notes."""

from __future__ import annotations

import pytest
from xmpp_ext_support import Xmpp, error_of, wire

C = "http://jabber.org/protocol/commands"
ITEMS = "http://jabber.org/protocol/disco#items"
ADMINS = {"acl": {"admins": {"account": ["alice"]}}, "access_rules": {"admin": [{"allow": "admins"}],
                                                                       "register": [{"allow": "all"}]}}


@pytest.fixture
def w(tmp_path):
    return wire(tmp_path, config=ADMINS)


def _nodes(c) -> list[str]:
    got = c.iq(f"<iq type='get' id='i' to='localhost'><query xmlns='{ITEMS}' node='{C}'/></iq>")
    return [i.get("node") for i in got[0]]


def _run(c, node: str, inner: str = "", extra: str = ""):
    return c.iq(f"<iq type='set' id='x' to='localhost'><command xmlns='{C}' node='{node}'{extra}>{inner}"
                "</command></iq>")


def _note(iq) -> tuple[str, str]:
    n = iq.find(f"{{{C}}}command/{{{C}}}note")
    return n.get("type"), n.text


def test_ping_for_everyone_and_operator_commands_for_operators_only(w):
    alice, bob = Xmpp(w).login("alice"), Xmpp(w).login("bob")
    assert _nodes(bob) == ["ping"]
    assert "ping" in _nodes(alice) and "accounts" in _nodes(alice) and "register" in _nodes(alice)
    pong = _run(bob, "ping")
    assert pong[0].get("status") == "completed" and _note(pong) == ("info", "Pong")
    assert error_of(_run(bob, "accounts")) == "forbidden"
    assert error_of(_run(bob, "no-such-command")) == "item-not-found"
    done = _run(alice, "accounts")
    assert done[0].get("status") == "completed"
    kind, text = _note(done)
    assert kind == "info" and "alice" in text and "bob" in text
    info = alice.iq("<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info' "
                    "node='accounts'/></iq>")
    assert [f.get("var") for f in info[0].findall("{http://jabber.org/protocol/disco#info}feature")] == \
        [C, "jabber:x:data"]


def test_a_command_with_arguments_asks_with_a_form_then_runs(w):
    alice = Xmpp(w).login("alice")
    first = _run(alice, "register")
    cmd = first[0]
    assert cmd.get("status") == "executing" and cmd.get("sessionid")
    fields = [f.get("var") for f in cmd.findall("{jabber:x:data}x/{jabber:x:data}field")]
    assert fields == ["user", "password"]
    sid = cmd.get("sessionid")
    form = ("<x xmlns='jabber:x:data' type='submit'><field var='user'><value>carol</value></field>"
            "<field var='password'><value>pw</value></field></x>")
    done = _run(alice, "register", form, f" sessionid='{sid}' action='complete'")
    assert done[0].get("status") == "completed" and _note(done)[0] == "info"
    assert w.cores["a"].accounts.get("carol") is not None
    # The same session cannot be used twice; a missing argument is an error note.
    assert error_of(_run(alice, "register", form, f" sessionid='{sid}' action='complete'")) == "bad-request"
    sid2 = _run(alice, "register")[0].get("sessionid")
    half = ("<x xmlns='jabber:x:data' type='submit'><field var='user'><value>dave</value></field></x>")
    bad = _run(alice, "register", half, f" sessionid='{sid2}'")
    assert _note(bad)[0] == "error" and "PASSWORD" in _note(bad)[1]
    # The table's own refusal (an account that exists) is an error note too.
    sid3 = _run(alice, "register")[0].get("sessionid")
    again = _run(alice, "register", form, f" sessionid='{sid3}'")
    assert _note(again)[0] == "error" and "exists" in _note(again)[1]


def test_cancel_and_another_accounts_session(w):
    alice, bob = Xmpp(w).login("alice"), Xmpp(w).login("bob")
    sid = _run(alice, "register")[0].get("sessionid")
    assert error_of(_run(bob, "ping", "", f" sessionid='{sid}'")) == "bad-request"
    gone = _run(alice, "register", "", f" sessionid='{sid}' action='cancel'")
    assert gone[0].get("status") == "canceled"
    assert error_of(_run(alice, "register", "", f" sessionid='{sid}'")) == "bad-request"
