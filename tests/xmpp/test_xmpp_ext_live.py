"""The XMPP services on a real server with slixmpp as the real client, each through its own plugin:
vCard-temp and avatars (xep_0054, xep_0153; kept across a restart), private storage (xep_0049),
last activity (xep_0012), in-band registration (xep_0077), ad-hoc commands (xep_0050) and HTTP
upload (xep_0363, the file PUT and got back over the HTTP listener).
(aioxmpp, which pins lxml 4, runs in its own virtualenv: test_aioxmpp_im.py.)"""

from __future__ import annotations

import asyncio
import hashlib
import urllib.request

import pytest
from xmpp_ext_support import ext_server
from xmpp_live import WAIT, Inbox, make_client, offline, online

slixmpp = pytest.importorskip("slixmpp")
from slixmpp.exceptions import IqError  # noqa: E402
from slixmpp.xmlstream import ElementBase  # noqa: E402

RULES = {"oper": [{"allow": "all"}], "register": [{"allow": "all"}], "create_channel": [{"allow": "all"}],
         "link": [{"allow": "all"}], "admin": [{"allow": "admins"}]}
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


@pytest.fixture
def srv(tmp_path):
    s = ext_server(tmp_path / "x", acl={"admins": {"account": ["alice"]}}, access_rules=RULES)
    yield s
    s.stop()


def _client(jid: str, srv, *plugins: str, password: str = "secret"):
    return make_client(slixmpp, jid, password, srv, plugins=("xep_0030", "xep_0199", *plugins))


async def _subscribe(watcher, owner):
    """`watcher` subscribes to `owner`'s presence (slixmpp approves requests by itself)."""
    got = Inbox(watcher, "presence_subscribed")
    watcher.send_presence(pto=owner.boundjid.bare, ptype="subscribe")
    await got.wait(lambda p: p["from"].bare == owner.boundjid.bare, "subscribed")


def test_vcard_and_avatar_between_two_accounts_and_across_a_restart(srv):
    async def main():
        alice = await online(_client("alice@localhost/a", srv, "xep_0054", "xep_0153"), srv)
        bob = await online(_client("bob@localhost/b", srv, "xep_0054", "xep_0153"), srv)
        await _subscribe(bob, alice)
        vcard = alice.plugin["xep_0054"].make_vcard()
        vcard["FN"] = "Alice Liddell"
        vcard["NICKNAME"] = "alice"
        await alice.plugin["xep_0054"].publish_vcard(vcard, timeout=WAIT)
        got = await bob.plugin["xep_0054"].get_vcard("alice@localhost", cached=False, timeout=WAIT)
        assert got["vcard_temp"]["FN"] == "Alice Liddell"
        presences = Inbox(bob, "presence_available")
        await alice.plugin["xep_0153"].set_avatar(avatar=PNG, mtype="image/png", timeout=WAIT)
        sha1 = hashlib.sha1(PNG).hexdigest()
        await presences.wait(lambda p: p["from"].bare == "alice@localhost" and p["vcard_temp_update"]["photo"] == sha1,
                             "alice's presence with the photo hash")
        got = await bob.plugin["xep_0054"].get_vcard("alice@localhost", cached=False, timeout=WAIT)
        assert got["vcard_temp"]["PHOTO"]["BINVAL"] == PNG
        await offline(alice, bob)
    asyncio.run(main())
    srv.stop()
    srv.start()

    async def again():
        bob = await online(_client("bob@localhost/b2", srv, "xep_0054"), srv)
        got = await bob.plugin["xep_0054"].get_vcard("alice@localhost", cached=False, timeout=WAIT)
        assert got["vcard_temp"]["FN"] == "Alice Liddell"          # read back from the database
        await offline(bob)
    asyncio.run(again())


class Prefs(ElementBase):
    name, namespace, plugin_attrib = "prefs", "urn:example:prefs", "prefs"
    interfaces = sub_interfaces = {"color"}


def test_private_storage_set_and_get(srv):
    async def main():
        alice = await online(_client("alice@localhost/a", srv, "xep_0049"), srv)
        alice.plugin["xep_0049"].register(Prefs)
        p = Prefs()
        p["color"] = "blue"
        await alice.plugin["xep_0049"].store(p, timeout=WAIT)
        iq = await alice.plugin["xep_0049"].retrieve("prefs", timeout=WAIT)
        assert iq["private"]["prefs"]["color"] == "blue"
        with pytest.raises(IqError) as refused:
            bad = alice.make_iq_set()
            bad["private"].xml.append(slixmpp.xmlstream.ET.fromstring("<body xmlns='jabber:client'/>"))
            await bad.send(timeout=WAIT)
        assert refused.value.iq["error"]["condition"] == "not-acceptable"
        await offline(alice)
    asyncio.run(main())


def test_last_activity_of_the_server_and_of_a_contact(srv):
    async def main():
        alice = await online(_client("alice@localhost/a", srv, "xep_0012"), srv)
        bob = await online(_client("bob@localhost/b", srv, "xep_0012"), srv)
        up = await bob.plugin["xep_0012"].get_last_activity("localhost", timeout=WAIT)
        assert up["last_activity"]["seconds"] >= 0
        await _subscribe(bob, alice)
        idle = await bob.plugin["xep_0012"].get_last_activity("alice@localhost", timeout=WAIT)
        assert idle["last_activity"]["seconds"] >= 0
        alice.send_presence(ptype="unavailable", pstatus="gone fishing")
        await offline(alice)
        # The logout is recorded when the server sees the stream end: ask until it has.
        for _ in range(int(WAIT * 10)):
            last = await bob.plugin["xep_0012"].get_last_activity("alice@localhost", timeout=WAIT)
            if last["last_activity"]["status"] == "gone fishing":
                break
            await asyncio.sleep(0.1)
        assert last["last_activity"]["status"] == "gone fishing"
        await offline(bob)
    asyncio.run(main())


def test_in_band_registration_password_change_and_cancel(srv):
    async def main():
        carol = _client("carol@localhost/c", srv, "xep_0004", "xep_0066", "xep_0077", password="first")
        carol.plugin["xep_0077"].create_account = True

        async def register(form):
            resp = carol.Iq()
            resp["type"] = "set"
            resp["register"]["username"] = carol.boundjid.user
            resp["register"]["password"] = carol.password
            await resp.send(timeout=WAIT)
        carol.add_event_handler("register", register)
        await online(carol, srv)
        assert "carol" in srv.call("accounts")
        await carol.plugin["xep_0077"].change_password("second", jid="localhost", timeout=WAIT)
        await offline(carol)
        again = await online(_client("carol@localhost/c2", srv, "xep_0077", password="second"), srv)
        await again.plugin["xep_0077"].cancel_registration(jid="localhost", timeout=WAIT)
        await asyncio.wait_for(again.disconnected, WAIT)
        assert "carol" not in srv.call("accounts")
    asyncio.run(main())


def test_ad_hoc_ping_and_an_operator_command_with_a_form(srv):
    async def main():
        alice = await online(_client("alice@localhost/a", srv, "xep_0004", "xep_0050"), srv)
        bob = await online(_client("bob@localhost/b", srv, "xep_0004", "xep_0050"), srv)
        items = await bob.plugin["xep_0050"].get_commands("localhost", timeout=WAIT)
        assert [i[1] for i in items["disco_items"]["items"]] == ["ping"]
        pong = await bob.plugin["xep_0050"].send_command("localhost", "ping", timeout=WAIT)
        assert pong["command"]["status"] == "completed" and pong["command"]["notes"] == [("info", "Pong")]
        items = await alice.plugin["xep_0050"].get_commands("localhost", timeout=WAIT)
        assert {"ping", "status", "register", "accounts"} <= {i[1] for i in items["disco_items"]["items"]}
        first = await alice.plugin["xep_0050"].send_command("localhost", "register", timeout=WAIT)
        assert first["command"]["status"] == "executing"
        form = first["command"]["form"]
        fields = form["fields"]
        assert [f["var"] for f in (fields.values() if isinstance(fields, dict) else fields)] == ["user", "password"]
        answer = alice.plugin["xep_0004"].make_form(ftype="submit")
        answer.add_field(var="user", value="dave")
        answer.add_field(var="password", value="pw")
        done = await alice.plugin["xep_0050"].send_command("localhost", "register", action="complete",
                                                           payload=answer, sessionid=first["command"]["sessionid"],
                                                           timeout=WAIT)
        assert done["command"]["status"] == "completed" and done["command"]["notes"][0][0] == "info"
        assert "dave" in srv.call("accounts")
        await offline(alice, bob)
    asyncio.run(main())


def test_http_upload_put_and_get(srv):
    pytest.importorskip("aiohttp")

    async def main():
        alice = await online(_client("alice@localhost/a", srv, "xep_0363"), srv)
        body = b"hello, upload\n" * 10
        url = await alice.plugin["xep_0363"].upload_file("notes.txt", size=len(body), content_type="text/plain",
                                                         input_file=__import__("io").BytesIO(body), timeout=WAIT)
        assert url.startswith(f"http://127.0.0.1:{srv.ports['http']}/upload/")
        got = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=WAIT).read())
        assert got == body
        await offline(alice)
    asyncio.run(main())
