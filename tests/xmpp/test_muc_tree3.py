"""One room across configs/tree-3 with real processes: XMPP occupants on the two ends, an IRC member
in the middle; each message once everywhere; a split past the split-hold is status 333 to XMPP
occupants, the netjoin brings the presence back, and messages said during the split arrive once."""

from __future__ import annotations

import asyncio

import pytest
from xmpp_live import Inbox, make_client, offline, online

from support import RawClient, TreeNetwork, wait_for

slixmpp = pytest.importorskip("slixmpp")
pytestmark = pytest.mark.timeout(300)

FAST_LINKS = {"linking": {"ping_interval": 0.5, "timeout": 2.0, "retry_min": 0.2, "retry_max": 1.0}}
PLUGINS = ("xep_0199", "xep_0030", "xep_0045")


def test_room_across_the_tree_with_a_split_and_a_netjoin(tmp_path):
    net = TreeNetwork("tree-3", tmp_path, extra_listen=("xmpp",), modules={"xmpp": {}, "muc": {}},
                      split_hold=3, **FAST_LINKS).start()
    try:
        a, b, c = net["a"], net["b"], net["c"]
        for srv in (a, c):
            srv.ports = {"c2s": net.port(srv.dir.name, "xmpp")}
        a.ctl("register", "alice", "secret")
        a.ctl("register", "bob", "secret")
        from slixmpp import JID
        room = JID("tree@conference.localhost")

        async def main():
            dave = RawClient(net.port("b", "irc")).register("dave")
            dave.send("JOIN #tree")
            await asyncio.to_thread(dave.read_until, " 366 ")
            alice = await online(make_client(slixmpp, "alice@localhost/a", "secret", a, verify=False, plugins=PLUGINS), a)
            bob = None
            for _ in range(100):                       # the account crosses the tree to c
                try:
                    bob = await online(make_client(slixmpp, "bob@localhost/c", "secret", c, verify=False,
                                                   plugins=PLUGINS), c)
                    break
                except AssertionError:
                    await asyncio.sleep(0.2)
            a_msgs, b_msgs = Inbox(alice, "groupchat_message"), Inbox(bob, "groupchat_message")
            a_pres = Inbox(alice, "groupchat_presence")
            joined = await alice.plugin["xep_0045"].join_muc_wait(room, "alice", maxstanzas=0)
            assert "dave" in [p["from"].resource for p in joined[2]]
            joined = await bob.plugin["xep_0045"].join_muc_wait(room, "bob", maxstanzas=0)
            assert {"dave", "alice"} <= {p["from"].resource for p in joined[2]}
            await a_pres.wait(lambda p: p["from"].resource == "bob", "bob's join across the tree")
            alice.send_message(mto=room, mbody="over two links", mtype="groupchat")
            await b_msgs.wait(lambda m: m["body"] == "over two links", "alice's message at c")
            await asyncio.to_thread(dave.read_until, "over two links")
            dave.send("PRIVMSG #tree :from the middle")
            for inbox in (a_msgs, b_msgs):
                await inbox.wait(lambda m: m["body"] == "from the middle", "dave's message")
            # split c off; past the hold alice sees bob leave with 333
            net.wait_converged()
            c.ctl("unlink", "b.relay.test")
            bob.send_message(mto=room, mbody="said during the split", mtype="groupchat")
            gone = await a_pres.wait(lambda p: p["from"].resource == "bob" and p["type"] == "unavailable",
                                     "bob's netsplit")
            assert 333 in gone["muc"]["status_codes"]
            # the netjoin: bob is back in alice's view, and what he said during the split arrives once
            c.ctl("link", "b.relay.test")
            net.wait_linked()
            back = len(a_pres.items)
            await a_pres.wait(lambda p: p in a_pres.items[back:] and p["from"].resource == "bob"
                              and p["type"] != "unavailable", "bob back after the netjoin")
            alice.send_message(mto=room, mbody="after the netjoin", mtype="groupchat")
            await b_msgs.wait(lambda m: m["body"] == "after the netjoin", "the room after the netjoin")
            assert [m["body"] for m in b_msgs.items].count("over two links") == 1
            assert [m["body"] for m in b_msgs.items].count("from the middle") == 1
            dave.close()
            await offline(alice, bob)
        asyncio.run(main())
    finally:
        net.stop()


def test_one_history_across_the_tree(tmp_path):
    """Messages said while only a had occupants: bob on c reads them by room MAM (c asks a, which
    archived them) and gets them as history when he joins, once each, in order."""
    net = TreeNetwork("tree-3", tmp_path, extra_listen=("xmpp",),
                      modules={"xmpp": {}, "muc": {"archive": "all", "catchup_wait": 30}}, **FAST_LINKS).start()
    try:
        a, c = net["a"], net["c"]
        for srv in (a, c):
            srv.ports = {"c2s": net.port(srv.dir.name, "xmpp")}
        a.ctl("register", "alice", "secret")
        a.ctl("register", "bob", "secret")
        from slixmpp import JID
        room = JID("hist@conference.localhost")
        plugins = (*PLUGINS, "xep_0004", "xep_0059", "xep_0313")
        said = ["said on a 0", "said on a 1", "said on a 2"]

        async def main():
            alice = await online(make_client(slixmpp, "alice@localhost/a", "secret", a, verify=False,
                                             plugins=plugins), a)
            a_msgs = Inbox(alice, "groupchat_message")
            await alice.plugin["xep_0045"].join_muc_wait(room, "alice", maxstanzas=0)
            for body in said:
                alice.send_message(mto=room, mbody=body, mtype="groupchat")
                await a_msgs.wait(lambda m, body=body: m["body"] == body, "alice's reflection")
            bob = None
            for _ in range(100):                       # the account crosses the tree to c
                try:
                    bob = await online(make_client(slixmpp, "bob@localhost/c", "secret", c, verify=False,
                                                   plugins=plugins), c)
                    break
                except AssertionError:
                    await asyncio.sleep(0.2)
            net.wait_converged()
            got = await bob.plugin["xep_0313"].retrieve(jid=room, timeout=60)   # c had no one in the room
            bodies = [m["mam_result"]["forwarded"]["stanza"]["body"] for m in got["mam"]["results"]]
            assert bodies == said, bodies
            joined = await bob.plugin["xep_0045"].join_muc_wait(room, "bob", maxstanzas=10, timeout=60)
            assert [m["body"] for m in joined[3]] == said
            got = await bob.plugin["xep_0313"].retrieve(jid=room, timeout=60)   # once each, merged
            assert [m["mam_result"]["forwarded"]["stanza"]["body"] for m in got["mam"]["results"]] == said
            await offline(alice, bob)
        asyncio.run(main())
    finally:
        net.stop()


def test_an_affiliation_removed_during_a_real_split_stays_removed(tmp_path):
    """alice (owner, on a) made bob admin of a persistent room; while c is split off she takes it
    back; after the netjoin bob joining on c is no admin (c's older grant does not come back)."""
    from slixmpp.plugins.xep_0004 import Form
    net = TreeNetwork("tree-3", tmp_path, extra_listen=("xmpp",), modules={"xmpp": {}, "muc": {}},
                      split_hold=1, **FAST_LINKS).start()
    try:
        a, c = net["a"], net["c"]
        for srv in (a, c):
            srv.ports = {"c2s": net.port(srv.dir.name, "xmpp")}
        a.ctl("register", "alice", "secret")
        a.ctl("register", "bob", "secret")
        from slixmpp import JID
        room = JID("affil@conference.localhost")
        plugins = (*PLUGINS, "xep_0004")

        async def main():
            alice = await online(make_client(slixmpp, "alice@localhost/a", "secret", a, verify=False,
                                             plugins=plugins), a)
            muc = alice.plugin["xep_0045"]
            await muc.join_muc_wait(room, "alice", maxstanzas=0)
            form = Form()
            form["type"] = "submit"
            form.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/muc#roomconfig")
            form.add_field(var="muc#roomconfig_persistentroom", value=True)
            await muc.set_room_config(room, form)
            await muc.set_affiliation(room, "admin", jid=JID("bob@localhost"))
            bob = None
            for _ in range(100):                       # the account crosses the tree to c
                try:
                    bob = await online(make_client(slixmpp, "bob@localhost/c", "secret", c, verify=False,
                                                   plugins=plugins), c)
                    break
                except AssertionError:
                    await asyncio.sleep(0.2)
            joined = await bob.plugin["xep_0045"].join_muc_wait(room, "bob", maxstanzas=0, timeout=60)
            assert joined[0]["muc"]["affiliation"] == "admin"      # the grant reached c
            bob.plugin["xep_0045"].leave_muc(room, "bob")
            net.wait_converged()
            c.ctl("unlink", "b.relay.test")
            await asyncio.to_thread(wait_for, lambda: net.server_count("c") == 1, 30, 0.1, "c split off")
            await muc.set_affiliation(room, "none", jid=JID("bob@localhost"))
            c.ctl("link", "b.relay.test")
            await asyncio.to_thread(net.wait_linked)
            for _ in range(150):                       # c learns the removal from a's burst
                joined = await bob.plugin["xep_0045"].join_muc_wait(room, "bob", maxstanzas=0, timeout=60)
                if joined[0]["muc"]["affiliation"] == "none":
                    break
                bob.plugin["xep_0045"].leave_muc(room, "bob")
                await asyncio.sleep(0.2)
            assert joined[0]["muc"]["affiliation"] == "none"
            admins = await muc.get_affiliation_list(room, "admin")
            assert JID("bob@localhost") not in admins
            await offline(alice, bob)
        asyncio.run(main())
    finally:
        net.stop()


def test_redaction_between_irc_and_xmpp_across_the_tree(tmp_path):
    """An IRC operator on c REDACTs (draft/message-redaction, a raw socket client with CAP) a message
    said on b: alice on a gets the XEP-0424/0425 retraction, a client without the capability the
    notice; alice, made @, moderates one (XEP-0425) and the operator gets it as REDACT."""
    import re
    from xml.etree import ElementTree as ET
    net = TreeNetwork("tree-3", tmp_path, extra_listen=("xmpp",), modules={"xmpp": {}, "muc": {}},
                      **FAST_LINKS).start()
    try:
        a = net["a"]
        a.ports = {"c2s": net.port("a", "xmpp")}
        a.ctl("register", "alice", "secret")
        from slixmpp import JID
        room = JID("redact@conference.localhost")

        async def main():
            oper = RawClient(net.port("c", "irc")).register("oper", caps=["message-tags", "draft/message-redaction"])
            oper.send("JOIN #redact")
            await asyncio.to_thread(oper.read_until, " 366 ")
            plain = RawClient(net.port("b", "irc")).register("plain")
            plain.send("JOIN #redact")
            await asyncio.to_thread(plain.read_until, " 366 ")
            alice = await online(make_client(slixmpp, "alice@localhost/a", "secret", a, verify=False,
                                             plugins=PLUGINS), a)
            msgs = Inbox(alice, "groupchat_message")
            await alice.plugin["xep_0045"].join_muc_wait(room, "alice", maxstanzas=0)
            await asyncio.to_thread(oper.read_until, "JOIN #redact")          # alice's join reached c
            plain.send("PRIVMSG #redact :regrettable words")
            line = await asyncio.to_thread(oper.read_until, "regrettable words")
            msgid = re.search(r"(?:^@|;)msgid=([^; ]+)", line).group(1)
            said = await msgs.wait(lambda m: m["body"] == "regrettable words", "plain's message at a")
            sid = re.search(r'<stanza-id [^>]*id="([^"]+)"', str(said)).group(1)
            oper.send(f"REDACT #redact {msgid} :off topic")
            await asyncio.to_thread(oper.read_until, f"REDACT #redact {msgid} :off topic")
            notice = await asyncio.to_thread(plain.read_until, "NOTICE #redact")
            assert "REDACT" not in notice and "off topic" in notice
            got = await msgs.wait(lambda m: "urn:xmpp:message-retract:1" in str(m), "the retraction at a")
            assert f'id="{sid}"' in str(got) and "off topic" in str(got)
            # XEP-0425 the other way: alice (@ now) moderates a message of plain's
            oper.send("MODE #redact +o alice")
            await asyncio.to_thread(plain.read_until, "+o alice")
            plain.send("PRIVMSG #redact :spam spam spam")
            spam = await msgs.wait(lambda m: m["body"] == "spam spam spam", "the spam at a")
            spam_sid = re.search(r'<stanza-id [^>]*id="([^"]+)"', str(spam)).group(1)
            iq = alice.make_iq_set(ito=room)
            iq.append(ET.fromstring(f"<moderate xmlns='urn:xmpp:message-moderate:1' id='{spam_sid}'>"
                                    "<retract xmlns='urn:xmpp:message-retract:1'/><reason>pure spam</reason>"
                                    "</moderate>"))
            await iq.send(timeout=60)
            line = await asyncio.to_thread(oper.read_until, " REDACT #redact ")
            assert line.endswith(f"REDACT #redact {spam_sid.rsplit('-', 1)[0]} :pure spam"), line
            await asyncio.to_thread(plain.read_until, "pure spam")
            oper.close()
            plain.close()
            await offline(alice)
        asyncio.run(main())
    finally:
        net.stop()


def test_an_iq_to_an_occupant_across_the_tree(tmp_path):
    """alice on a asks room/bob (bob on c) for his software version (XEP-0092): bob's slixmpp answers
    the relayed iq and alice gets the answer from bob's room JID."""
    net = TreeNetwork("tree-3", tmp_path, extra_listen=("xmpp",), modules={"xmpp": {}, "muc": {}},
                      **FAST_LINKS).start()
    try:
        a, c = net["a"], net["c"]
        for srv in (a, c):
            srv.ports = {"c2s": net.port(srv.dir.name, "xmpp")}
        a.ctl("register", "alice", "secret")
        a.ctl("register", "bob", "secret")
        from slixmpp import JID
        room = JID("iq@conference.localhost")
        plugins = (*PLUGINS, "xep_0092")

        async def main():
            alice = await online(make_client(slixmpp, "alice@localhost/a", "secret", a, verify=False,
                                             plugins=plugins), a)
            bob = None
            for _ in range(100):                       # the account crosses the tree to c
                try:
                    bob = await online(make_client(slixmpp, "bob@localhost/c", "secret", c, verify=False,
                                                   plugins=plugins), c)
                    break
                except AssertionError:
                    await asyncio.sleep(0.2)
            from slixmpp.xmlstream.handler import Callback
            from slixmpp.xmlstream.matcher import MatchXPath
            asked = []
            bob.register_handler(Callback("seen", MatchXPath("{jabber:client}iq/{jabber:iq:version}query"),
                                          asked.append))
            await alice.plugin["xep_0045"].join_muc_wait(room, "alice", maxstanzas=0)
            joined = await bob.plugin["xep_0045"].join_muc_wait(room, "bob", maxstanzas=0, timeout=60)
            assert "alice" in [p["from"].resource for p in joined[2]]
            got = await alice.plugin["xep_0092"].get_version(JID(f"{room}/bob"), timeout=60)
            assert got["type"] == "result" and got["from"] == JID(f"{room}/bob")
            assert got["software_version"]["name"] == "Slixmpp"     # what bob's client answers
            q = next(iq for iq in asked if iq["type"] == "get")
            assert q["from"] == JID(f"{room}/alice")            # bob saw alice's room JID, not her own
            await offline(alice, bob)
        asyncio.run(main())
    finally:
        net.stop()
