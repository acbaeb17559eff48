"""PubSub against real clients over real sockets: slixmpp's xep_0060 for every operation and the
error cases, paho-mqtt and slixmpp on the same node/topic both ways with wildcards, nodes and
items surviving a restart on both storage backends, and a publish crossing configs/tree-3.
(aioxmpp, which pins lxml 4, runs in its own virtualenv: test_aioxmpp_pubsub.py.)"""

from __future__ import annotations

import asyncio
import threading
import xml.etree.ElementTree as ET

import pytest
from xmpp_live import WAIT, Inbox, make_client, offline, online

from support import Server, TreeNetwork, free_port, server_config, wait_for

slixmpp = pytest.importorskip("slixmpp")
from slixmpp.exceptions import IqError  # noqa: E402

SVC = "pubsub.localhost"
PS = "http://jabber.org/protocol/pubsub"
ERRORS = PS + "#errors"
PLUGINS = ("xep_0030", "xep_0004", "xep_0059", "xep_0060", "xep_0199")


def pubsub_server(directory, accounts=("alice", "bob", "carol"), mqtt: bool = False, **overrides) -> Server:
    ports = {"irc": free_port(), "c2s": free_port(), "tls": free_port(), "mqtt": free_port()}
    listen = [{"proto": "irc", "host": "127.0.0.1", "port": ports["irc"]},
              {"proto": "xmpp", "host": "127.0.0.1", "port": ports["c2s"]},
              {"proto": "xmpp", "host": "127.0.0.1", "port": ports["tls"], "tls": True}]
    modules = {"xmpp": {}, "pubsub": {}}
    if mqtt:
        listen.append({"proto": "mqtt", "host": "127.0.0.1", "port": ports["mqtt"]})
        modules = {"mqtt": {"allow_anonymous": True}, **modules}
    srv = Server(directory, server_config(listen=listen, modules=modules, **overrides)).start()
    srv.ports = ports
    for name in accounts:
        srv.ctl("register", name, "secret")
    return srv


def entry(text: str) -> ET.Element:
    el = ET.Element("{urn:example:e}entry")
    el.text = text
    return el


def form(client, form_type: str, **fields):
    f = client.plugin["xep_0004"].make_form(ftype="submit")
    f.add_field(var="FORM_TYPE", ftype="hidden", value=form_type)
    for k, v in fields.items():
        f.add_field(var="pubsub#" + k, value=v)
    return f


async def fails(coro, condition: str, app: str | None = None):
    with pytest.raises(IqError) as e:
        await coro
    assert e.value.iq["error"]["condition"] == condition, str(e.value.iq)
    if app:
        assert f"<{app} xmlns=\"{ERRORS}\"" in str(e.value.iq), str(e.value.iq)


def test_slixmpp_every_operation_and_its_errors(tmp_path):
    srv = pubsub_server(tmp_path / "s")
    try:
        async def main():
            alice = await online(make_client(slixmpp, "alice@localhost/a", "secret", srv, plugins=PLUGINS), srv)
            bob = await online(make_client(slixmpp, "bob@localhost/b", "secret", srv, plugins=PLUGINS), srv)
            carol = await online(make_client(slixmpp, "carol@localhost/c", "secret", srv, plugins=PLUGINS), srv)
            a, b, c = (x.plugin["xep_0060"] for x in (alice, bob, carol))
            published, retracted = Inbox(bob, "pubsub_publish"), Inbox(bob, "pubsub_retract")
            purged, deleted = Inbox(bob, "pubsub_purge"), Inbox(bob, "pubsub_delete")

            info = await alice.plugin["xep_0030"].get_info(jid=SVC, timeout=WAIT)
            assert PS + "#publish" in info["disco_info"]["features"]
            default = await a.get_node_config(SVC, timeout=WAIT)          # <default/>
            assert "pubsub#access_model" in default["pubsub_owner"]["default"]["form"].get_fields()
            await a.create_node(SVC, "news", timeout=WAIT)
            await fails(a.create_node(SVC, "news", timeout=WAIT), "conflict")
            instant = await a.create_node(SVC, None, timeout=WAIT)
            assert instant["pubsub"]["create"]["node"]
            conf = await a.get_node_config(SVC, "news", timeout=WAIT)
            assert conf["pubsub_owner"]["configure"]["form"].get_fields()["pubsub#max_items"]["value"] == "10"
            await a.set_node_config(SVC, "news", form(alice, PS + "#node_config", max_items="3", title="News"),
                                    timeout=WAIT)
            sub = await b.subscribe(SVC, "news", timeout=WAIT)
            assert sub["pubsub"]["subscription"]["subscription"] == "subscribed"
            r = await a.publish(SVC, "news", id="one", payload=entry("first"), timeout=WAIT)
            assert r["pubsub"]["publish"]["item"]["id"] == "one"
            ev = await published.wait(lambda m: m["pubsub_event"]["items"]["item"]["id"] == "one", "the event")
            assert ev["pubsub_event"]["items"]["item"]["payload"].text == "first"
            r = await a.publish(SVC, "news", payload=entry("second"), timeout=WAIT)
            second = r["pubsub"]["publish"]["item"]["id"]
            items = await b.get_items(SVC, "news", timeout=WAIT)
            assert [i["id"] for i in items["pubsub"]["items"]] == [second, "one"]
            one = await b.get_item(SVC, "news", "one", timeout=WAIT)
            assert [i["id"] for i in one["pubsub"]["items"]] == ["one"]
            await fails(b.get_item(SVC, "news", "nope", timeout=WAIT), "item-not-found")
            await a.retract(SVC, "news", "one", notify=True, timeout=WAIT)
            await retracted.wait(lambda m: m["pubsub_event"]["items"]["retract"]["id"] == "one", "the retract")
            subs = await b.get_subscriptions(SVC, timeout=WAIT)
            assert [(s["node"], s["subscription"]) for s in subs["pubsub"]["subscriptions"]] == [("news", "subscribed")]
            affs = await a.get_affiliations(SVC, timeout=WAIT)
            assert ("news", "owner") in [(x["node"], x["affiliation"]) for x in affs["pubsub"]["affiliations"]]
            # subscription options
            opts = await b.get_subscription_options(SVC, "news", "bob@localhost", timeout=WAIT)
            assert "pubsub#deliver" in opts["pubsub"]["options"]["options"].get_fields()
            await b.set_subscription_options(SVC, "news", "bob@localhost",
                                             form(bob, PS + "#subscribe_options", deliver="1"), timeout=WAIT)
            # manage affiliations and subscriptions (owner)
            await a.modify_affiliations(SVC, "news", [("carol@localhost", "publisher")], timeout=WAIT)
            naffs = await a.get_node_affiliations(SVC, "news", timeout=WAIT)
            assert {(x["jid"].bare, x["affiliation"]) for x in naffs["pubsub_owner"]["affiliations"]} == {
                ("alice@localhost", "owner"), ("carol@localhost", "publisher")}
            await c.publish(SVC, "news", id="by-carol", payload=entry("carol"), timeout=WAIT)
            await published.wait(lambda m: m["pubsub_event"]["items"]["item"]["id"] == "by-carol", "carol's item")
            await a.modify_affiliations(SVC, "news", [("carol@localhost", "outcast")], timeout=WAIT)
            await fails(c.get_items(SVC, "news", timeout=WAIT), "forbidden")
            await fails(c.publish(SVC, "news", payload=entry("x"), timeout=WAIT), "forbidden")
            nsubs = await a.get_node_subscriptions(SVC, "news", timeout=WAIT)
            assert [s["jid"].bare for s in nsubs["pubsub_owner"]["subscriptions"]] == ["bob@localhost"]
            await a.modify_subscriptions(SVC, "news", [("bob@localhost", "none")], timeout=WAIT)
            await fails(b.unsubscribe(SVC, "news", timeout=WAIT), "unexpected-request", "not-subscribed")
            await b.subscribe(SVC, "news", timeout=WAIT)
            await b.unsubscribe(SVC, "news", timeout=WAIT)
            await b.subscribe(SVC, "news", timeout=WAIT)
            # errors
            await fails(b.publish(SVC, "news", payload=entry("x"), timeout=WAIT), "forbidden")
            await fails(b.delete_node(SVC, "news", timeout=WAIT), "forbidden")
            await fails(b.purge(SVC, "news", timeout=WAIT), "forbidden")
            await fails(b.get_items(SVC, "missing", timeout=WAIT), "item-not-found")
            await fails(b.subscribe(SVC, "news", subscribee="alice@localhost", timeout=WAIT), "bad-request",
                        "invalid-jid")
            await fails(a.set_node_config(SVC, "news", form(alice, PS + "#node_config", access_model="nope"),
                                          timeout=WAIT), "not-acceptable")
            await a.create_node(SVC, "closed", config=form(alice, PS + "#node_config", access_model="whitelist"),
                                timeout=WAIT)
            await fails(b.subscribe(SVC, "closed", timeout=WAIT), "not-allowed", "closed-node")
            await a.create_node(SVC, "pres", config=form(alice, PS + "#node_config", access_model="presence"),
                                timeout=WAIT)
            await fails(b.subscribe(SVC, "pres", timeout=WAIT), "not-authorized", "presence-subscription-required")
            opts = form(alice, PS + "#publish-options", access_model="open")
            await fails(a.publish(SVC, "closed", payload=entry("x"), options=opts, timeout=WAIT), "conflict",
                        "precondition-not-met")
            await a.publish(SVC, "auto/created", payload=entry("auto"), options=opts, timeout=WAIT)
            # RSM paging over the items
            for i in range(3):
                await a.publish(SVC, "news", id=f"p{i}", payload=entry(str(i)), timeout=WAIT)
            from slixmpp.plugins.xep_0059 import Set
            from slixmpp.plugins.xep_0060.stanza import Pubsub
            from slixmpp.xmlstream import register_stanza_plugin
            register_stanza_plugin(Pubsub, Set)
            iq = alice.Iq(sto=SVC, stype="get")
            iq["pubsub"]["items"]["node"] = "news"
            iq["pubsub"]["rsm"]["max"] = "2"
            page = await iq.send(timeout=WAIT)
            assert [i["id"] for i in page["pubsub"]["items"]] == ["p2", "p1"]
            assert str(page["pubsub"]["rsm"]["count"]) == "3"
            # purge and delete (with redirect), and the service keeps serving
            await a.purge(SVC, "news", timeout=WAIT)
            await purged.wait(lambda m: m["pubsub_event"]["purge"]["node"] == "news", "the purge")
            assert list((await b.get_items(SVC, "news", timeout=WAIT))["pubsub"]["items"]) == []
            iq = alice.Iq(sto=SVC, stype="set")
            iq["pubsub_owner"]["delete"]["node"] = "news"
            iq["pubsub_owner"]["delete"].xml.append(ET.Element("{%s#owner}redirect" % PS,
                                                               uri="xmpp:pubsub.localhost?;node=closed"))
            await iq.send(timeout=WAIT)
            await deleted.wait(lambda m: m["pubsub_event"]["delete"]["node"] == "news", "the delete")
            assert "node=closed" in str(deleted.items[-1])
            await fails(b.get_items(SVC, "news", timeout=WAIT), "item-not-found")
            await offline(alice, bob, carol)
        asyncio.run(main())
        assert srv.call("pubsub", "stats")["nodes"] >= 3
    finally:
        srv.stop()


def test_paho_and_slixmpp_on_one_namespace_both_ways_with_wildcards(tmp_path):
    mqtt_client = pytest.importorskip("paho.mqtt.client")
    srv = pubsub_server(tmp_path / "s", mqtt=True)
    try:
        got: list = []
        ready = threading.Event()
        changed = threading.Condition()

        def on_message(c, userdata, msg):
            with changed:
                got.append((msg.topic, msg.payload, msg.qos))
                changed.notify_all()

        m = mqtt_client.Client(mqtt_client.CallbackAPIVersion.VERSION2, client_id="paho-sub")
        m.on_message = on_message
        m.on_subscribe = lambda *a: ready.set()
        m.connect("127.0.0.1", srv.ports["mqtt"])
        m.loop_start()
        m.subscribe([("home/#", 1), ("office/+", 1)])
        assert ready.wait(WAIT)

        def mqtt_got(pred):
            with changed:
                assert changed.wait_for(lambda: any(pred(x) for x in got), WAIT), got
            return next(x for x in got if pred(x))

        async def main():
            alice = await online(make_client(slixmpp, "alice@localhost/a", "secret", srv, plugins=PLUGINS), srv)
            bob = await online(make_client(slixmpp, "bob@localhost/b", "secret", srv, plugins=PLUGINS), srv)
            a, b = alice.plugin["xep_0060"], bob.plugin["xep_0060"]
            events = Inbox(bob, "pubsub_publish")
            # XMPP -> MQTT: the item's payload, QoS 1, through home/# and office/+
            await a.create_node(SVC, "home/kitchen/light", timeout=WAIT)
            await a.publish(SVC, "home/kitchen/light", id="l1", payload=entry("on"), timeout=WAIT)
            topic, payload, qos = await asyncio.to_thread(mqtt_got, lambda x: x[0] == "home/kitchen/light")
            assert payload == b'<entry xmlns="urn:example:e">on</entry>' and qos == 1
            await a.publish(SVC, "office/desk", payload=entry("busy"), timeout=WAIT)
            await asyncio.to_thread(mqtt_got, lambda x: x[0] == "office/desk")
            # MQTT -> XMPP: collection "home" with depth all (like home/#), "office" depth 1 (like office/+)
            await a.create_node(SVC, "home", config=form(alice, PS + "#node_config", node_type="collection"),
                                timeout=WAIT)
            await a.create_node(SVC, "office", config=form(alice, PS + "#node_config", node_type="collection"),
                                timeout=WAIT)
            await b.subscribe(SVC, "home", options=form(bob, PS + "#subscribe_options", subscription_depth="all"),
                              timeout=WAIT)
            await b.subscribe(SVC, "office", timeout=WAIT)
            await asyncio.sleep(0)
            pub = mqtt_client.Client(mqtt_client.CallbackAPIVersion.VERSION2, client_id="paho-pub")
            pub.connect("127.0.0.1", srv.ports["mqtt"])
            pub.loop_start()
            pub.publish("home/hall/temp", b"19.5", qos=1).wait_for_publish(WAIT)
            pub.publish("office/desk", b"<s xmlns='urn:s'>free</s>", qos=1).wait_for_publish(WAIT)
            pub.publish("office/desk/lamp", b"too deep", qos=1).wait_for_publish(WAIT)
            pub.publish("home/hall/bin", bytes([0, 255, 1]), qos=1, retain=True).wait_for_publish(WAIT)

            def has(node):
                return lambda msg: msg["pubsub_event"]["items"]["node"] == node
            ev = await events.wait(has("home/hall/temp"), "MQTT's publish as an item")
            p = ev["pubsub_event"]["items"]["item"]["payload"]
            assert p.tag == "{urn:relaynet:mqtt:0}mqtt" and p.text == "19.5"
            ev = await events.wait(has("office/desk"), "MQTT's XML payload")
            assert ev["pubsub_event"]["items"]["item"]["payload"].tag == "{urn:s}s"
            await events.wait(has("home/hall/bin"), "the retained binary message")
            assert not [e for e in events.items if has("office/desk/lamp")(e)]      # depth 1
            items = await b.get_items(SVC, "home/hall/bin", timeout=WAIT)
            bin_item = list(items["pubsub"]["items"])[0]["payload"]
            assert bin_item.get("encoding") == "base64" and bin_item.text == "AP8B"
            # clearing the retained message purges the node
            pub.publish("home/hall/bin", b"", qos=1, retain=True).wait_for_publish(WAIT)
            for _ in range(200):
                items = await b.get_items(SVC, "home/hall/bin", timeout=WAIT)
                if not list(items["pubsub"]["items"]):
                    break
                await asyncio.sleep(0.05)
            assert not list(items["pubsub"]["items"])
            pub.loop_stop()
            pub.disconnect()
            await offline(alice, bob)
        asyncio.run(main())
        m.loop_stop()
        m.disconnect()
    finally:
        srv.stop()


def test_nodes_and_items_survive_a_restart(tmp_path, storage_section):
    srv = pubsub_server(tmp_path / "s", storage=storage_section)
    try:
        async def first():
            alice = await online(make_client(slixmpp, "alice@localhost/a", "secret", srv, plugins=PLUGINS), srv)
            bob = await online(make_client(slixmpp, "bob@localhost/b", "secret", srv, plugins=PLUGINS), srv)
            a = alice.plugin["xep_0060"]
            await a.create_node(SVC, "kept", config=form(alice, PS + "#node_config", access_model="whitelist",
                                                         max_items="100"), timeout=WAIT)
            await a.modify_affiliations(SVC, "kept", [("bob@localhost", "member")], timeout=WAIT)
            await bob.plugin["xep_0060"].subscribe(SVC, "kept", timeout=WAIT)
            for i in range(5):
                await a.publish(SVC, "kept", id=f"k{i}", payload=entry(f"item {i}"), timeout=WAIT)
            await a.retract(SVC, "kept", "k0", timeout=WAIT)
            await a.publish("alice@localhost", "urn:xmpp:avatar:metadata", id="av", payload=entry("pep"),
                            timeout=WAIT)
            await offline(alice, bob)
        asyncio.run(first())
        srv.stop()
        srv.start()

        async def second():
            alice = await online(make_client(slixmpp, "alice@localhost/a", "secret", srv, plugins=PLUGINS), srv)
            bob = await online(make_client(slixmpp, "bob@localhost/b", "secret", srv, plugins=PLUGINS), srv)
            items = await bob.plugin["xep_0060"].get_items(SVC, "kept", timeout=WAIT)
            assert [i["id"] for i in items["pubsub"]["items"]] == ["k4", "k3", "k2", "k1"]
            assert list(items["pubsub"]["items"])[0]["payload"].text == "item 4"
            conf = await alice.plugin["xep_0060"].get_node_config(SVC, "kept", timeout=WAIT)
            fields = conf["pubsub_owner"]["configure"]["form"].get_fields()
            assert fields["pubsub#access_model"]["value"] == "whitelist" and fields["pubsub#max_items"]["value"] == "100"
            subs = await bob.plugin["xep_0060"].get_subscriptions(SVC, timeout=WAIT)
            assert [s["node"] for s in subs["pubsub"]["subscriptions"]] == ["kept"]
            await fails(alice.plugin["xep_0060"].create_node(SVC, "kept", timeout=WAIT), "conflict")
            pep = await alice.plugin["xep_0060"].get_items("alice@localhost", "urn:xmpp:avatar:metadata", timeout=WAIT)
            assert [i["id"] for i in pep["pubsub"]["items"]] == ["av"]
            await offline(alice, bob)
        asyncio.run(second())
    finally:
        srv.stop()


def test_a_publish_crosses_tree_3(tmp_path):
    net = TreeNetwork("tree-3", tmp_path, extra_listen=("xmpp",), modules={"xmpp": {}, "pubsub": {}}).start()
    try:
        names = list(net.servers)
        first, last = net[names[0]], net[names[-1]]
        for srv in (first, last):
            srv.ports = {"c2s": net.port(srv.dir.name, "xmpp")}
        first.ctl("register", "alice", "secret")

        async def main():
            alice = await online(make_client(slixmpp, "alice@localhost/a", "secret", first, verify=False,
                                             plugins=PLUGINS), first)
            bob = await online(make_client(slixmpp, "bob@localhost/b", "secret", last, verify=False,
                                           plugins=PLUGINS), last)
            a, b = alice.plugin["xep_0060"], bob.plugin["xep_0060"]
            await a.create_node(SVC, "tree/news", timeout=WAIT)
            for _ in range(200):                  # the node's state crosses the tree
                try:
                    await b.subscribe(SVC, "tree/news", timeout=WAIT)
                    break
                except IqError:
                    await asyncio.sleep(0.05)
            events = Inbox(bob, "pubsub_publish")
            # bob's subscription is in the far server's topic filter set once the first server knows it
            await asyncio.to_thread(wait_for, lambda: any(first.call("pubsub", "stats")["topic_servers"].values()),
                                    WAIT, 0.05, "bob's node in the first server's view of the tree")
            await a.publish(SVC, "tree/news", id="n1", payload=entry("across"), timeout=WAIT)
            ev = await events.wait(lambda m: True, "the event across the tree")
            assert ev["pubsub_event"]["items"]["item"]["payload"].text == "across"
            assert str(ev["from"]) == SVC
            # and the items are on the far server (bob reads them there)
            items = await b.get_items(SVC, "tree/news", timeout=WAIT)
            assert ev["pubsub_event"]["items"]["item"]["id"] in [i["id"] for i in items["pubsub"]["items"]]
            await offline(alice, bob)
        last.ctl("register", "bob", "secret")
        asyncio.run(main())
    finally:
        net.stop()


def test_pep_notifications_filtered_by_caps_with_slixmpp(tmp_path):
    """slixmpp's xep_0163/xep_0115: bob wants tunes (+notify in his caps), carol wants avatars; the
    server learns their caps with disco#info and sends each only what they asked for."""
    srv = pubsub_server(tmp_path / "s")
    try:
        async def main():
            pep = PLUGINS + ("xep_0115", "xep_0163")
            alice = await online(make_client(slixmpp, "alice@localhost/a", "secret", srv,
                                             plugins=pep + ("xep_0118", "xep_0084")), srv)
            bob = await online(make_client(slixmpp, "bob@localhost/b", "secret", srv, plugins=pep + ("xep_0118",)),
                               srv, presence=False)
            carol = await online(make_client(slixmpp, "carol@localhost/c", "secret", srv,
                                             plugins=pep + ("xep_0084",)), srv, presence=False)
            tunes, carol_events = Inbox(bob, "user_tune_publish"), Inbox(carol, "pubsub_publish")
            for c in (bob, carol):
                await c.get_roster(timeout=WAIT)
                c.send_presence()
                roster = Inbox(c, "roster_update")
                c.send_presence(pto="alice@localhost", ptype="subscribe")      # c may see alice's presence
                await roster.wait(lambda r: c.client_roster["alice@localhost"]["subscription"] in ("to", "both"),
                                  "the subscription approved")
            await alice.plugin["xep_0118"].publish_tune(artist="Artist", title="Song", timeout=WAIT)
            ev = await tunes.wait(lambda m: True, "the tune for bob, who wants tunes")
            assert ev["from"].bare == "alice@localhost"
            assert ev["pubsub_event"]["items"]["item"]["tune"]["title"] == "Song"
            await alice.plugin["xep_0084"].publish_avatar_metadata(
                {"id": "abc", "type": "image/png", "bytes": 7}, timeout=WAIT)
            await carol_events.wait(lambda m: m["pubsub_event"]["items"]["node"] == "urn:xmpp:avatar:metadata",
                                    "the avatar metadata for carol, who wants avatars")
            # the tune would have come first, had it been sent to her
            assert [m["pubsub_event"]["items"]["node"] for m in carol_events.items] == ["urn:xmpp:avatar:metadata"]
            await offline(alice, bob, carol)
        asyncio.run(main())
    finally:
        srv.stop()
