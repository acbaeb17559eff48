"""MUC with real clients on a real server: slixmpp (xep_0045, 0249, 0410, 0425) as XMPP occupants,
the jaraco `irc` client and paho-mqtt as the other members of the same channel."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from support import Server, free_port, server_config
from xmpp_live import Inbox, make_client, offline, online

slixmpp = pytest.importorskip("slixmpp")
pytestmark = pytest.mark.timeout(300)     # several logins and rooms per test; a bound, not a speed check
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "irc"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "mqtt"))
from ircsupport import JIrc  # noqa: E402
from mqttsupport import Paho  # noqa: E402

from slixmpp import JID  # noqa: E402
from slixmpp.exceptions import IqError, PresenceError  # noqa: E402

PLUGINS = ("xep_0199", "xep_0030", "xep_0045", "xep_0249", "xep_0410", "xep_0425", "xep_0359", "xep_0421")
DOMAIN = "conference.localhost"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    ports = {"irc": free_port(), "c2s": free_port(), "tls": free_port(), "mqtt": free_port()}
    cfg = server_config(listen=[{"proto": "irc", "host": "127.0.0.1", "port": ports["irc"]},
                                {"proto": "xmpp", "host": "127.0.0.1", "port": ports["c2s"]},
                                {"proto": "xmpp", "host": "127.0.0.1", "port": ports["tls"], "tls": True},
                                {"proto": "mqtt", "host": "127.0.0.1", "port": ports["mqtt"]}],
                        modules={"xmpp": {}, "muc": {}, "mqtt": {}})
    s = Server(tmp_path_factory.mktemp("muc") / "srv", cfg).start()
    s.ports = ports
    for name in ("alice", "bob", "carol", "erin"):
        s.ctl("register", name, "secret")
    yield s
    s.stop()


def client(srv, account: str, resource: str = "r"):
    return make_client(slixmpp, f"{account}@localhost/{resource}", "secret", srv, plugins=PLUGINS)


async def in_thread(fn, *args):
    return await asyncio.to_thread(fn, *args)


def is_presence(nick: str, typ: str | None = None, code: int | None = None):
    def test(p):
        if p["from"].resource != nick:
            return False
        if typ is not None and p["type"] != typ:
            return False
        return code is None or code in p["muc"]["status_codes"]
    return test


def test_irc_two_xmpp_and_mqtt_in_one_channel(srv):
    room = JID(f"lounge@{DOMAIN}")

    async def main():
        dave = await in_thread(JIrc, srv.ports["irc"], "dave")
        dave.conn.join("#lounge")
        await in_thread(dave.expect, "join")
        dave.conn.topic("#lounge", "welcome all")
        await in_thread(dave.expect, "topic")
        alice = await online(client(srv, "alice"), srv)
        bob = await online(client(srv, "bob"), srv)
        a_msgs, b_msgs = Inbox(alice, "groupchat_message"), Inbox(bob, "groupchat_message")
        a_pres, b_pres = Inbox(alice, "groupchat_presence"), Inbox(bob, "groupchat_presence")
        a_subj = Inbox(alice, "groupchat_subject")
        joined = await alice.plugin["xep_0045"].join_muc_wait(room, "alice", maxstanzas=10)
        assert joined[1]["subject"] == "welcome all"
        assert "dave" in [p["from"].resource for p in joined[2]]
        assert 110 in joined[0]["muc"]["status_codes"]
        await in_thread(dave.expect, lambda ev: ev.type == "join" and ev.source.nick == "alice")
        carol = await in_thread(lambda: Paho(srv.ports["mqtt"], "carol-mqtt", username="carol", password="secret"))
        await in_thread(carol.subscribe, "chan/lounge", 1)
        await a_pres.wait(is_presence("carol"), "carol's join")
        await bob.plugin["xep_0045"].join_muc_wait(room, "bob", maxstanzas=0)
        await a_pres.wait(is_presence("bob"), "bob's join")
        # XMPP -> everyone
        alice.send_message(mto=room, mbody="hello from xmpp", mtype="groupchat")
        await b_msgs.wait(lambda m: m["body"] == "hello from xmpp" and m["from"].resource == "alice")
        await a_msgs.wait(lambda m: m["body"] == "hello from xmpp")          # the reflection
        ev = await in_thread(dave.expect, "pubmsg")
        assert ev.source.nick == "alice" and ev.arguments == ["hello from xmpp"]
        m = await in_thread(carol.get)
        assert (m.topic, m.payload) == ("chan/lounge", b"hello from xmpp")
        # IRC -> everyone
        dave.conn.privmsg("#lounge", "hello from irc")
        for inbox in (a_msgs, b_msgs):
            await inbox.wait(lambda m: m["body"] == "hello from irc" and m["from"].resource == "dave")
        assert (await in_thread(carol.get)).payload == b"hello from irc"
        # MQTT -> everyone
        await in_thread(carol.publish, "chan/lounge", b"hello from mqtt", 1)
        for inbox in (a_msgs, b_msgs):
            await inbox.wait(lambda m: m["body"] == "hello from mqtt" and m["from"].resource == "carol")
        ev = await in_thread(dave.expect, "pubmsg")
        assert ev.source.nick == "carol" and ev.arguments == ["hello from mqtt"]
        # the subject from XMPP (alice is no moderator: +t refuses), then from IRC
        dave.conn.topic("#lounge", "a new topic")
        await a_subj.wait(lambda m: m["subject"] == "a new topic")
        # a kick from IRC: 307 to both XMPP occupants
        dave.conn.kick("#lounge", "bob", "enough")
        await a_pres.wait(is_presence("bob", "unavailable", 307), "bob's kick")
        await b_pres.wait(is_presence("bob", "unavailable", 307), "bob's own kick")
        # the MQTT member leaves: a PART, unavailable to XMPP
        await in_thread(carol.c.unsubscribe, "chan/lounge")
        await a_pres.wait(is_presence("carol", "unavailable"), "carol's part")
        ev = await in_thread(dave.expect, lambda ev: ev.type == "part" and ev.source.nick == "carol")
        # an XMPP occupant leaves: a PART on IRC
        alice.plugin["xep_0045"].leave_muc(room, "alice")
        await in_thread(dave.expect, lambda ev: ev.type == "part" and ev.source.nick == "alice")
        await in_thread(carol.c.disconnect)
        dave.close()
        await offline(alice, bob)
    asyncio.run(main())


def test_xmpp_scenarios_history_nick_roles_ban_password_invites_ping_moderation(srv):
    room = JID(f"club@{DOMAIN}")

    async def main():
        alice = await online(client(srv, "alice", "s2"), srv)
        bob = await online(client(srv, "bob", "s2"), srv)
        erin = await online(client(srv, "erin", "s2"), srv)
        muc_a, muc_b, muc_e = (c.plugin["xep_0045"] for c in (alice, bob, erin))
        a_msgs, b_msgs = Inbox(alice, "groupchat_message"), Inbox(bob, "groupchat_message")
        a_pres, b_pres = Inbox(alice, "groupchat_presence"), Inbox(bob, "groupchat_presence")
        b_chat, e_invites = Inbox(bob, "message"), Inbox(erin, "groupchat_invite")
        e_direct = Inbox(erin, "groupchat_direct_invite")
        joined = await muc_a.join_muc_wait(room, "alice")
        assert {110, 201} <= set(joined[0]["muc"]["status_codes"]) and joined[0]["muc"]["role"] == "moderator"
        for i in range(4):
            alice.send_message(mto=room, mbody=f"history {i}", mtype="groupchat")
            await a_msgs.wait(lambda m, i=i: m["body"] == f"history {i}")
        # history on join, limited
        joined = await muc_b.join_muc_wait(room, "bob", maxstanzas=2)
        assert [m["body"] for m in joined[3]] == ["history 2", "history 3"]
        # nick change: a network nick change, 303 to the others
        await muc_b.set_self_nick(room, "bobby")
        await a_pres.wait(lambda p: p["from"].resource == "bob" and 303 in p["muc"]["status_codes"]
                          and b'nick="bobby"' in bytes(str(p), "utf-8"), "303")
        # private message in the room
        alice.send_message(mto=JID(f"{room}/bobby"), mbody="psst", mtype="chat")
        await b_chat.wait(lambda m: m["body"] == "psst" and m["type"] == "chat", "the private message")
        # groupchat to a nick is bad-request
        bad = Inbox(alice, "message_error")
        alice.send_message(mto=JID(f"{room}/bobby"), mbody="oops", mtype="groupchat")
        await bad.wait(lambda m: m["error"]["condition"] == "bad-request", "bad-request")
        # self-ping
        assert (await alice.plugin["xep_0410"].send_self_ping(JID(f"{room}/alice"), timeout=30)).name == "JOINED"
        # voice: +m makes bobby a visitor, voice makes him a participant again
        form = await muc_a.get_room_config(room)
        assert "muc#roomconfig_moderatedroom" in form.get_fields()
        await muc_a.set_room_config(room, _submit(alice, {"muc#roomconfig_moderatedroom": True}))
        await b_pres.wait(lambda p: p["from"].resource == "bobby" and p["muc"]["role"] == "visitor", "visitor")
        await muc_a.set_role(room, "bobby", "participant")
        await b_pres.wait(lambda p: p["from"].resource == "bobby" and p["muc"]["role"] == "participant"
                          and p["muc"]["affiliation"] == "none", "voiced")
        # moderation: alice retracts bobby's message for everyone
        bob.send_message(mto=room, mbody="regrettable", mtype="groupchat")
        got = await a_msgs.wait(lambda m: m["body"] == "regrettable")
        stanza_id = got.xml.find("{urn:xmpp:sid:0}stanza-id").get("id")
        assert got.xml.find("{urn:xmpp:occupant-id:0}occupant-id").get("id")
        await alice.plugin["xep_0425"].moderate(room, stanza_id, "no")
        await b_msgs.wait(lambda m: m.xml.find("{urn:xmpp:message-retract:1}retract") is not None
                          and m.xml.find("{urn:xmpp:message-retract:1}retract").get("id") == stanza_id, "retraction")
        # ban (outcast): 301, and no way back in
        await muc_a.set_affiliation(room, "outcast", jid=JID("bob@localhost"))
        await a_pres.wait(is_presence("bobby", "unavailable", 301), "bobby's ban")
        with pytest.raises(PresenceError) as e:
            await muc_b.join_muc_wait(room, "bobby", timeout=30)
        assert e.value.condition == "forbidden"
        await muc_a.set_affiliation(room, "none", jid=JID("bob@localhost"))
        # members-only and password
        await muc_a.set_room_config(room, _submit(alice, {"muc#roomconfig_membersonly": True,
                                                          "muc#roomconfig_roomsecret": "sesame",
                                                          "muc#roomconfig_passwordprotectedroom": True}))
        with pytest.raises(PresenceError) as e:
            await muc_e.join_muc_wait(room, "erin", timeout=30)
        assert e.value.condition == "registration-required"
        await muc_a.set_affiliation(room, "member", jid=JID("erin@localhost"))
        with pytest.raises(PresenceError) as e:
            await muc_e.join_muc_wait(room, "erin", timeout=30)
        assert e.value.condition == "not-authorized"
        joined = await muc_e.join_muc_wait(room, "erin", password="sesame", timeout=30)
        assert joined[0]["muc"]["affiliation"] == "member"
        muc_e.leave_muc(room, "erin")
        # invitations: mediated (an INVITE) and direct (XEP-0249)
        muc_a.invite(room, JID("erin@localhost"), "come")
        await e_invites.wait(lambda m: m["from"] == room, "mediated invitation")
        alice.plugin["xep_0249"].send_invitation(JID("erin@localhost"), room)
        await e_direct.wait(lambda m: True, "direct invitation")
        await offline(alice, bob, erin)
    asyncio.run(main())


def _submit(c, values: dict):
    form = c.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/muc#roomconfig")
    for k, v in values.items():
        form.add_field(var=k, value=v)
    return form
