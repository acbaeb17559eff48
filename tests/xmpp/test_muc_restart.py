"""A persistent room across a restart of a real server: its configuration, affiliations, history and
archive (MAM) are in the storage layer; an offline member catches up from the archive before joining."""

from __future__ import annotations

import asyncio

import pytest

from support import Server, free_port, server_config
from xmpp_live import Inbox, make_client, offline, online

slixmpp = pytest.importorskip("slixmpp")
pytestmark = pytest.mark.timeout(300)
PLUGINS = ("xep_0199", "xep_0030", "xep_0045", "xep_0004", "xep_0313")


def _submit(c, values: dict):
    form = c.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/muc#roomconfig")
    for k, v in values.items():
        form.add_field(var=k, value=v)
    return form


def test_a_persistent_room_survives_a_restart(tmp_path):
    ports = {"c2s": free_port(), "tls": free_port()}
    cfg = server_config(listen=[{"proto": "xmpp", "host": "127.0.0.1", "port": ports["c2s"]},
                                {"proto": "xmpp", "host": "127.0.0.1", "port": ports["tls"], "tls": True}],
                        modules={"xmpp": {}, "muc": {}})
    srv = Server(tmp_path / "srv", cfg).start()
    srv.ports = ports
    from slixmpp import JID
    room = JID("keep@conference.localhost")
    try:
        srv.ctl("register", "alice", "secret")
        srv.ctl("register", "bob", "secret")

        async def before():
            alice = await online(make_client(slixmpp, "alice@localhost/r", "secret", srv, plugins=PLUGINS), srv)
            muc = alice.plugin["xep_0045"]
            msgs = Inbox(alice, "groupchat_message")
            await muc.join_muc_wait(room, "alice", maxstanzas=0)
            await muc.set_room_config(room, _submit(alice, {"muc#roomconfig_persistentroom": True,
                                                            "muc#roomconfig_membersonly": True,
                                                            "muc#roomconfig_roomdesc": "kept description"}))
            await muc.set_affiliation(room, "member", jid=JID("bob@localhost"))
            for i in range(3):
                alice.send_message(mto=room, mbody=f"kept {i}", mtype="groupchat")
                await msgs.wait(lambda m, i=i: m["body"] == f"kept {i}")
            await offline(alice)
        asyncio.run(before())
        srv.stop()
        srv.start()

        async def after():
            bob = await online(make_client(slixmpp, "bob@localhost/r", "secret", srv, plugins=PLUGINS), srv)
            info = await bob.plugin["xep_0030"].get_info(jid=room, timeout=60)   # the configuration stayed
            assert "kept description" in str(info)
            got = await bob.plugin["xep_0313"].retrieve(jid=room, timeout=60)   # MAM on the room
            bodies = [m["mam_result"]["forwarded"]["stanza"]["body"] for m in got["mam"]["results"]]
            assert bodies == ["kept 0", "kept 1", "kept 2"], bodies
            joined = await bob.plugin["xep_0045"].join_muc_wait(room, "bob", maxstanzas=10)
            assert joined[0]["muc"]["affiliation"] == "member"
            assert [m["body"] for m in joined[3]] == ["kept 0", "kept 1", "kept 2"]
            alice = await online(make_client(slixmpp, "alice@localhost/r", "secret", srv, plugins=PLUGINS), srv)
            joined = await alice.plugin["xep_0045"].join_muc_wait(room, "alice", maxstanzas=0)
            assert joined[0]["muc"]["affiliation"] == "owner" and joined[0]["muc"]["role"] == "moderator"
            await offline(alice, bob)
        asyncio.run(after())
    finally:
        srv.stop()
