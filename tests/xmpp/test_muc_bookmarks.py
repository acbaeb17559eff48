"""Bookmarks (XEP-0402, PEP native bookmarks) with MUC on a real server: slixmpp stores a bookmark
with autojoin from one resource, a second resource of the account reads it back through PEP and
joins the room it names, with the nick it holds."""

from __future__ import annotations

import asyncio

import pytest

from support import Server, free_port, server_config
from xmpp_live import make_client, offline, online

slixmpp = pytest.importorskip("slixmpp")
pytestmark = pytest.mark.timeout(300)

PLUGINS = ("xep_0030", "xep_0004", "xep_0045", "xep_0059", "xep_0060", "xep_0163", "xep_0223", "xep_0402",
           "xep_0199")
BOOKMARKS = "urn:xmpp:bookmarks:1"


def test_a_bookmark_with_autojoin_read_from_a_second_resource_then_joined(tmp_path):
    ports = {"c2s": free_port(), "tls": free_port()}
    cfg = server_config(listen=[{"proto": "xmpp", "host": "127.0.0.1", "port": ports["c2s"]},
                                {"proto": "xmpp", "host": "127.0.0.1", "port": ports["tls"], "tls": True}],
                        modules={"xmpp": {}, "pubsub": {}, "muc": {}})
    srv = Server(tmp_path / "srv", cfg).start()
    srv.ports = ports
    from slixmpp import JID
    from slixmpp.plugins.xep_0402.stanza import Conference
    room = JID("club@conference.localhost")
    try:
        srv.ctl("register", "alice", "secret")

        async def main():
            first = await online(make_client(slixmpp, "alice@localhost/desk", "secret", srv, plugins=PLUGINS), srv)
            conf = Conference()
            conf["name"] = "The Club"
            conf["autojoin"] = True
            conf["nick"] = "ali"
            opts = first.plugin["xep_0004"].make_form(ftype="submit")
            opts.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/pubsub#publish-options")
            for var, value in (("pubsub#persist_items", True), ("pubsub#max_items", "max"),
                               ("pubsub#send_last_published_item", "never"), ("pubsub#access_model", "whitelist")):
                opts.add_field(var=var, value=value)
            await first.plugin["xep_0163"].publish(conf, node=BOOKMARKS, id=str(room), options=opts, timeout=60)
            second = await online(make_client(slixmpp, "alice@localhost/phone", "secret", srv, plugins=PLUGINS), srv)
            got = await second.plugin["xep_0060"].get_items(JID("alice@localhost"), BOOKMARKS, timeout=60)
            items = list(got["pubsub"]["items"])
            assert [i["id"] for i in items] == [str(room)]
            mark = items[0]["conference"]
            assert mark["name"] == "The Club" and mark["autojoin"] is True and mark["nick"] == "ali"
            # what a client does with autojoin: join the room with the bookmark's nick
            joined = await second.plugin["xep_0045"].join_muc_wait(JID(items[0]["id"]), mark["nick"],
                                                                   maxstanzas=0, timeout=60)
            assert joined[0]["from"] == JID(f"{room}/ali") and 110 in joined[0]["muc"]["status_codes"]
            assert joined[0]["muc"]["affiliation"] == "owner"
            # the bookmark is not for anyone else (whitelist: the owner only)
            srv.ctl("register", "mallory", "secret")
            other = await online(make_client(slixmpp, "mallory@localhost/x", "secret", srv, plugins=PLUGINS), srv)
            with pytest.raises(slixmpp.exceptions.IqError):
                await other.plugin["xep_0060"].get_items(JID("alice@localhost"), BOOKMARKS, timeout=60)
            await offline(first, second, other)
        asyncio.run(main())
    finally:
        srv.stop()
