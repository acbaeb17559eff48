"""The pubsub module in memory (cores from tests/support_net.py, transports without sockets): every
XEP-0060 operation and its errors through the router's one dispatch, access models, affiliations,
collections (dag) with depth, virtual nodes, PEP with caps, the topic namespace with MQTT items,
and two linked servers."""

from __future__ import annotations

import base64
import hashlib
import itertools

import pytest
from lxml import etree

from relay.core.topics import TopicItem
from support_net import Wire
from xmpp_ext_support import HEADER, Transport, bind, sasl_plain  # the in-memory stream and login the XMPP tests share

PS = "http://jabber.org/protocol/pubsub"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
OWNER = PS + "#owner"
EVENT = PS + "#event"
ERR = PS + "#errors"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
SVC = "pubsub.localhost"
C = "{jabber:client}"


class Client:
    """A bound XMPP client on one core; `iq()` sends and returns the answer, `got()` the other stanzas."""

    ids = itertools.count(1)

    def __init__(self, wire: Wire, core: str, account: str, resource: str = "r"):
        self.wire, self.core = wire, wire.cores[core]
        self.t = Transport()
        self.s = self.core.services["xmpp"].new_session(self.t, None, wire.now)
        self.feed(HEADER)
        sasl_plain(self, account)
        self.jid = bind(self, resource)
        self.bare = f"{account}@localhost"
        self.inbox: list = []

    def feed(self, data) -> None:
        self.s.data_received(data.encode() if isinstance(data, str) else data, self.wire.now)
        self.wire.pump()

    def raw(self) -> bytes:
        data = b"".join(self.t.out)
        self.t.out.clear()
        return data

    def stanzas(self) -> list:
        data = self.raw()
        root = etree.fromstring(b"<r xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
                                + data + b"</r>")
        return list(root)

    def got(self) -> list:
        self.inbox.extend(self.stanzas())
        out, self.inbox = self.inbox, []
        return out

    def iq(self, typ: str, body: str, to: str | None = SVC):
        i = f"q{next(self.ids)}"
        self.feed(f"<iq type='{typ}' id='{i}'" + (f" to='{to}'" if to else "") + f">{body}</iq>")
        answer = None
        for el in self.stanzas():
            if el.tag == C + "iq" and el.get("id") == i:
                answer = el
            else:
                self.inbox.append(el)
        assert answer is not None, f"no answer to {body}"
        return answer

    def ok(self, typ: str, body: str, to: str | None = SVC):
        a = self.iq(typ, body, to)
        assert a.get("type") == "result", etree.tostring(a)
        return a

    def fails(self, typ: str, body: str, condition: str, app: str | None = None, to: str | None = SVC):
        a = self.iq(typ, body, to)
        assert a.get("type") == "error", etree.tostring(a)
        err = a.find(C + "error")
        assert err.find("{%s}%s" % (STANZAS, condition)) is not None, etree.tostring(a)
        if app:
            assert err.find("{%s}%s" % (ERR, app)) is not None, etree.tostring(a)
        return a

    def events(self) -> list:
        return [m for m in self.got() if m.tag == C + "message" and m.find("{%s}event" % EVENT) is not None]


def ps(body: str) -> str:
    return f"<pubsub xmlns='{PS}'>{body}</pubsub>"


def owner(body: str) -> str:
    return f"<pubsub xmlns='{OWNER}'>{body}</pubsub>"


def form(form_type: str, **fields) -> str:
    out = f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{form_type}</value></field>"
    for k, v in fields.items():
        vals = v if isinstance(v, list) else [v]
        out += f"<field var='pubsub#{k}'>" + "".join(f"<value>{x}</value>" for x in vals) + "</field>"
    return out + "</x>"


def config(**fields) -> str:
    return form(PS + "#node_config", **fields)


def entry(text: str) -> str:
    return f"<entry xmlns='urn:example:e'>{text}</entry>"


def item_ids(answer) -> list[str]:
    return [i.get("id") for i in answer.iter("{%s}item" % PS)]


def event_items(msgs) -> list[tuple[str, str | None]]:
    return [(i.get("id"), (i[0].text if len(i) else None)) for m in msgs for i in m.iter("{%s}item" % EVENT)]


@pytest.fixture
def wire(tmp_path):
    return make_wire(tmp_path, ["a"])


def make_wire(tmp_path, names, **pubsub):
    w = Wire(tmp_path, names, modules={"xmpp": {"roster_file": ""}, "pubsub": {"persist": False, **pubsub}})
    for core in w.cores.values():
        for name in ("alice", "bob", "carol"):
            core.register_account(name, "secret", w.now)
    return w


def test_create_publish_subscribe_items_retract(wire):
    alice, bob = Client(wire, "a", "alice"), Client(wire, "a", "bob")
    alice.ok("set", ps("<create node='news'/>"))
    alice.fails("set", ps("<create node='news'/>"), "conflict")
    sub = bob.ok("set", ps(f"<subscribe node='news' jid='{bob.bare}'/>"))
    s = sub.find(".//{%s}subscription" % PS)
    assert s.get("subscription") == "subscribed" and s.get("subid")
    r = alice.ok("set", ps(f"<publish node='news'><item id='i1'>{entry('one')}</item></publish>"))
    assert item_ids(r) == ["i1"]
    assert event_items(bob.events()) == [("i1", "one")]
    r = alice.ok("set", ps(f"<publish node='news'><item>{entry('two')}</item></publish>"))
    generated = item_ids(r)[0]
    assert generated and generated != "i1"
    got = bob.ok("get", ps("<items node='news'/>"))
    assert item_ids(got) == [generated, "i1"]
    got = bob.ok("get", ps("<items node='news' max_items='1'/>"))
    assert item_ids(got) == [generated]
    got = bob.ok("get", ps("<items node='news'><item id='i1'/></items>"))
    assert item_ids(got) == ["i1"]
    bob.events()
    alice.ok("set", ps("<retract node='news' notify='true'><item id='i1'/></retract>"))
    retracts = [r.get("id") for m in bob.events() for r in m.iter("{%s}retract" % EVENT)]
    assert retracts == ["i1"]
    alice.fails("set", ps("<retract node='news'><item id='i1'/></retract>"), "item-not-found")
    bob.fails("set", ps(f"<retract node='news'><item id='{generated}'/></retract>"), "forbidden")
    bob.ok("set", ps(f"<unsubscribe node='news' jid='{bob.bare}'/>"))
    bob.fails("set", ps(f"<unsubscribe node='news' jid='{bob.bare}'/>"), "unexpected-request", "not-subscribed")
    alice.ok("set", ps(f"<publish node='news'><item>{entry('three')}</item></publish>"))
    assert bob.events() == []


def test_errors_of_the_dispatch(wire):
    alice, bob = Client(wire, "a", "alice"), Client(wire, "a", "bob")
    alice.fails("get", ps("<items node='nope'/>"), "item-not-found")
    alice.fails("get", ps("<items/>"), "bad-request", "nodeid-required")
    alice.fails("set", ps("<frobnicate node='x'/>"), "feature-not-implemented", "unsupported")
    alice.ok("set", ps("<create node='n'/>"))
    bob.fails("set", ps(f"<subscribe node='n' jid='alice@localhost'/>"), "bad-request", "invalid-jid")
    bob.fails("set", ps(f"<publish node='n'><item>{entry('x')}</item></publish>"), "forbidden")
    bob.fails("get", owner("<configure node='n'/>"), "forbidden")
    bob.fails("set", owner("<delete node='n'/>"), "forbidden")
    bob.fails("set", owner("<purge node='n'/>"), "forbidden")
    alice.fails("set", ps("<publish node='n'><item><a xmlns='urn:x'/><b xmlns='urn:x'/></item></publish>"),
                "bad-request", "invalid-payload")
    alice.fails("set", ps("<publish node='n'/>"), "bad-request", "item-required")
    big = "x" * 70000
    alice.fails("set", ps(f"<publish node='n'><item>{entry(big)}</item></publish>"), "not-acceptable",
                "payload-too-big")
    alice.fails("set", owner(f"<configure node='n'>{config(access_model='bogus')}</configure>"), "not-acceptable")
    alice.fails("set", owner(f"<configure node='n'>{config(max_items='10001')}</configure>"), "not-acceptable")
    alice.fails("set", owner("<affiliations node='n'><affiliation jid='alice@localhost' affiliation='none'/>"
                             "</affiliations>"), "not-acceptable")
    alice.fails("set", owner("<affiliations node='n'><affiliation jid='bob@localhost' affiliation='king'/>"
                             "</affiliations>"), "bad-request")
    # The service keeps serving after all of that.
    alice.ok("get", ps("<items node='n'/>"))


def test_instant_node_auto_create_and_publish_options(wire):
    alice = Client(wire, "a", "alice")
    r = alice.ok("set", ps("<create/>"))
    name = r.find(".//{%s}create" % PS).get("node")
    assert name
    alice.ok("get", ps(f"<items node='{name}'/>"))
    po = form(PS + "#publish-options", access_model="whitelist", max_items="max")
    alice.ok("set", ps(f"<publish node='auto'><item id='1'>{entry('a')}</item></publish>"
                       f"<publish-options>{po}</publish-options>"))
    conf = alice.ok("get", owner("<configure node='auto'/>"))
    fields = {f.get("var"): [v.text for v in f.findall("{jabber:x:data}value")]
              for f in conf.iter("{jabber:x:data}field")}
    assert fields["pubsub#access_model"] == ["whitelist"] and fields["pubsub#max_items"] == ["10000"]
    alice.ok("set", ps(f"<publish node='auto'><item id='2'>{entry('b')}</item></publish>"
                       f"<publish-options>{po}</publish-options>"))
    other = form(PS + "#publish-options", access_model="open")
    alice.fails("set", ps(f"<publish node='auto'><item id='3'>{entry('c')}</item></publish>"
                          f"<publish-options>{other}</publish-options>"), "conflict", "precondition-not-met")


def test_configure_default_delete_with_redirect_and_purge(wire):
    alice, bob = Client(wire, "a", "alice"), Client(wire, "a", "bob")
    alice.ok("set", ps("<create node='old'/>") + "")
    alice.ok("set", ps(f"<create node='cfg'/><configure>{config(max_items='2', notify_config='1')}</configure>"))
    d = alice.ok("get", owner("<default/>"))
    assert d.find(".//{jabber:x:data}x") is not None
    bob.ok("set", ps(f"<subscribe node='cfg' jid='{bob.bare}'/>"))
    for i in range(3):
        alice.ok("set", ps(f"<publish node='cfg'><item id='{i}'>{entry(str(i))}</item></publish>"))
    assert item_ids(bob.ok("get", ps("<items node='cfg'/>"))) == ["2", "1"]
    bob.events()
    alice.ok("set", owner(f"<configure node='cfg'>{config(title='Config')}</configure>"))
    assert any(m.find(".//{%s}configuration" % EVENT) is not None for m in bob.events())
    alice.ok("set", owner("<purge node='cfg'/>"))
    assert any(m.find(".//{%s}purge" % EVENT) is not None for m in bob.events())
    assert item_ids(bob.ok("get", ps("<items node='cfg'/>"))) == []
    alice.ok("set", owner("<delete node='cfg'><redirect uri='xmpp:pubsub.localhost?;node=old'/></delete>"))
    dels = [m.find(".//{%s}delete" % EVENT) for m in bob.events()]
    assert dels and dels[0].find("{%s}redirect" % EVENT).get("uri").endswith("node=old")
    bob.fails("get", ps("<items node='cfg'/>"), "item-not-found")


def test_subscriptions_affiliations_and_models(wire):
    alice, bob, carol = Client(wire, "a", "alice"), Client(wire, "a", "bob"), Client(wire, "a", "carol")
    alice.ok("set", ps(f"<create node='wl'/><configure>{config(access_model='whitelist')}</configure>"))
    bob.fails("set", ps(f"<subscribe node='wl' jid='{bob.bare}'/>"), "not-allowed", "closed-node")
    bob.fails("get", ps("<items node='wl'/>"), "not-allowed", "closed-node")
    alice.ok("set", owner("<affiliations node='wl'><affiliation jid='bob@localhost' affiliation='member'/>"
                          "<affiliation jid='carol@localhost' affiliation='publisher'/></affiliations>"))
    bob.ok("set", ps(f"<subscribe node='wl' jid='{bob.bare}'/>"))
    bob.fails("set", ps(f"<publish node='wl'><item>{entry('no')}</item></publish>"), "forbidden")
    carol.ok("set", ps(f"<publish node='wl'><item id='c1'>{entry('carol')}</item></publish>"))
    assert event_items(bob.events()) == [("c1", "carol")]
    affs = alice.ok("get", owner("<affiliations node='wl'/>"))
    assert {a.get("jid"): a.get("affiliation") for a in affs.iter("{%s}affiliation" % OWNER)} == {
        "alice@localhost": "owner", "bob@localhost": "member", "carol@localhost": "publisher"}
    mine = bob.ok("get", ps("<affiliations/>"))
    assert [(a.get("node"), a.get("affiliation")) for a in mine.iter("{%s}affiliation" % PS)] == [("wl", "member")]
    subs = bob.ok("get", ps("<subscriptions/>"))
    assert [(s.get("node"), s.get("subscription")) for s in subs.iter("{%s}subscription" % PS)] == [
        ("wl", "subscribed")]
    osubs = alice.ok("get", owner("<subscriptions node='wl'/>"))
    assert [s.get("jid") for s in osubs.iter("{%s}subscription" % OWNER)] == ["bob@localhost"]
    # publish-only: may publish, may not subscribe or retrieve; outcast: nothing, subscription gone
    alice.ok("set", owner("<affiliations node='wl'><affiliation jid='carol@localhost' affiliation='publish-only'/>"
                          "</affiliations>"))
    carol.fails("get", ps("<items node='wl'/>"), "forbidden")
    carol.ok("set", ps(f"<publish node='wl'><item id='c2'>{entry('c2')}</item></publish>"))
    alice.ok("set", owner("<affiliations node='wl'><affiliation jid='bob@localhost' affiliation='outcast'/>"
                          "</affiliations>"))
    bob.fails("get", ps("<items node='wl'/>"), "forbidden")
    assert alice.ok("get", owner("<subscriptions node='wl'/>")).find(".//{%s}subscription" % OWNER) is None
    # manage subscriptions: the owner subscribes carol, then removes it
    alice.ok("set", owner("<affiliations node='wl'><affiliation jid='carol@localhost' affiliation='member'/>"
                          "</affiliations>"))
    alice.ok("set", owner("<subscriptions node='wl'><subscription jid='carol@localhost' subscription='subscribed'/>"
                          "</subscriptions>"))
    assert any(m.find(".//{%s}subscription" % EVENT) is not None for m in carol.events())
    alice.ok("set", ps(f"<publish node='wl'><item id='a1'>{entry('a1')}</item></publish>"))
    assert event_items(carol.events()) == [("a1", "a1")]
    alice.ok("set", owner("<subscriptions node='wl'><subscription jid='carol@localhost' subscription='none'/>"
                          "</subscriptions>"))
    alice.ok("set", ps(f"<publish node='wl'><item id='a2'>{entry('a2')}</item></publish>"))
    assert carol.events() == []


def test_publish_models_and_open_access(wire):
    alice, bob, carol = Client(wire, "a", "alice"), Client(wire, "a", "bob"), Client(wire, "a", "carol")
    alice.ok("set", ps(f"<create node='subs'/><configure>{config(publish_model='subscribers')}</configure>"))
    bob.fails("set", ps(f"<publish node='subs'><item>{entry('x')}</item></publish>"), "forbidden")
    bob.ok("set", ps(f"<subscribe node='subs' jid='{bob.bare}'/>"))
    bob.ok("set", ps(f"<publish node='subs'><item>{entry('x')}</item></publish>"))
    alice.ok("set", ps(f"<create node='open'/><configure>{config(publish_model='open')}</configure>"))
    carol.ok("set", ps(f"<publish node='open'><item>{entry('anyone')}</item></publish>"))


def test_presence_roster_and_authorize_access(wire):
    alice, bob, carol = Client(wire, "a", "alice"), Client(wire, "a", "bob"), Client(wire, "a", "carol")
    alice.ok("set", ps(f"<create node='p'/><configure>{config(access_model='presence')}</configure>"))
    bob.fails("set", ps(f"<subscribe node='p' jid='{bob.bare}'/>"), "not-authorized",
              "presence-subscription-required")
    roster = wire.cores["a"].services["xmpp"].roster
    roster.put("alice", "bob@localhost", wire.now, subscription="from", groups=["friends"])
    bob.ok("set", ps(f"<subscribe node='p' jid='{bob.bare}'/>"))
    alice.ok("set", ps("<create node='r'/><configure>" + config(access_model="roster",
                                                                  roster_groups_allowed="friends") + "</configure>"))
    bob.ok("get", ps("<items node='r'/>"))
    carol.fails("get", ps("<items node='r'/>"), "not-authorized", "not-in-roster-group")
    # authorize: pending, the owner gets a form and approves
    alice.ok("set", ps(f"<create node='auth'/><configure>{config(access_model='authorize')}</configure>"))
    alice.got()
    s = carol.ok("set", ps(f"<subscribe node='auth' jid='{carol.bare}'/>"))
    assert s.find(".//{%s}subscription" % PS).get("subscription") == "pending"
    carol.fails("get", ps("<items node='auth'/>"), "not-authorized", "not-subscribed")
    asks = [m for m in alice.got() if m.find("{jabber:x:data}x") is not None]
    assert asks, "no authorization form"
    fields = {f.get("var"): f.findtext("{jabber:x:data}value") for f in asks[0].iter("{jabber:x:data}field")}
    assert fields["pubsub#subscriber_jid"] == carol.bare and fields["pubsub#node"] == "auth"
    answer = form(PS + "#subscribe_authorization", node="auth", subscriber_jid=carol.bare, allow="true")
    alice.feed(f"<message to='{SVC}'>{answer}</message>")
    assert any(m.find(".//{%s}subscription" % EVENT) is not None for m in carol.events())
    carol.ok("get", ps("<items node='auth'/>"))


def test_last_item_on_subscribe_notify_sub_no_payload_and_expiry(wire):
    alice, bob = Client(wire, "a", "alice"), Client(wire, "a", "bob")
    alice.ok("set", ps("<create node='n'/><configure>" + config(notify_sub="1", deliver_payloads="0",
                                                                item_expire="60") + "</configure>"))
    alice.ok("set", ps(f"<publish node='n'><item id='first'>{entry('1')}</item></publish>"))
    bob.ok("set", ps(f"<subscribe node='n' jid='{bob.bare}'/>"))
    assert event_items(bob.events()) == [("first", None)]       # the last item, without its payload
    assert any(m.find(".//{%s}subscription" % EVENT) is not None for m in alice.events())
    wire.now += 61
    wire.cores["a"].services["pubsub"].expire(wire.now)
    assert item_ids(bob.ok("get", ps("<items node='n'/>"))) == []


def test_max_items_ten_thousand_and_rsm_paging(wire):
    alice = Client(wire, "a", "alice")
    alice.ok("set", ps(f"<create node='big'/><configure>{config(max_items='10000')}</configure>"))
    svc = wire.cores["a"].services["pubsub"]
    node = svc.tree.get(SVC, "big")
    from bridges.xmpp.pubsub.nodes import Item
    for i in range(10_005):
        svc.plugin_of(node).publish_item(node, Item(f"i{i}", b"<x xmlns='urn:x'/>", "alice@localhost", i), svc.store)
    assert len(node.items) == 10_000 and "i4" not in node.items and "i5" in node.items
    rsm = "<set xmlns='http://jabber.org/protocol/rsm'><max>3</max></set>"
    page = alice.ok("get", ps("<items node='big'/>" + rsm))
    assert item_ids(page) == ["i10004", "i10003", "i10002"]
    assert page.findtext(".//{http://jabber.org/protocol/rsm}count") == "10000"
    rsm = "<set xmlns='http://jabber.org/protocol/rsm'><max>2</max><after>i10002</after></set>"
    assert item_ids(alice.ok("get", ps("<items node='big'/>" + rsm))) == ["i10001", "i10000"]


def test_subscription_options(wire):
    alice, bob = Client(wire, "a", "alice"), Client(wire, "a", "bob")
    alice.ok("set", ps("<create node='n'/>"))
    bob.ok("set", ps(f"<subscribe node='n' jid='{bob.bare}'/>"))
    o = bob.ok("get", ps(f"<options node='n' jid='{bob.bare}'/>"))
    assert o.find(".//{jabber:x:data}x") is not None
    bob.ok("set", ps(f"<options node='n' jid='{bob.bare}'>"
                     + form(PS + "#subscribe_options", deliver="0") + "</options>"))
    alice.ok("set", ps(f"<publish node='n'><item>{entry('quiet')}</item></publish>"))
    assert bob.events() == []
    bob.ok("get", ps("<default/>"))
    carol = Client(wire, "a", "carol")
    carol.fails("get", ps(f"<options node='n' jid='{carol.bare}'/>"), "unexpected-request", "not-subscribed")


def test_dag_collections_with_depth_and_type(wire):
    alice, bob, carol = Client(wire, "a", "alice"), Client(wire, "a", "bob"), Client(wire, "a", "carol")
    alice.ok("set", ps(f"<create node='sports'/><configure>{config(node_type='collection')}</configure>"))
    alice.ok("set", ps(f"<create node='music'/><configure>{config(node_type='collection')}</configure>"))
    alice.ok("set", ps(f"<create node='ball'/><configure>{config(collection='sports')}</configure>"))
    alice.ok("set", ps(f"<create node='deep'/><configure>{config(collection='ball')}</configure>"))
    alice.ok("set", ps("<create node='anthem'/><configure>" + config(collection=["sports", "music"]) + "</configure>"))
    alice.fails("set", owner(f"<configure node='sports'>{config(collection='deep')}</configure>"), "not-acceptable")
    all_opts = form(PS + "#subscribe_options", subscription_depth="all")
    bob.ok("set", ps(f"<subscribe node='sports' jid='{bob.bare}'/><options>{all_opts}</options>"))
    carol.ok("set", ps(f"<subscribe node='sports' jid='{carol.bare}'/>"))    # depth 1
    alice.ok("set", ps(f"<publish node='deep'><item id='d'>{entry('deep')}</item></publish>"))
    alice.ok("set", ps(f"<publish node='ball'><item id='b'>{entry('ball')}</item></publish>"))
    alice.ok("set", ps(f"<publish node='anthem'><item id='a'>{entry('anthem')}</item></publish>"))
    bm, cm = bob.events(), carol.events()
    assert [i for i, _ in event_items(bm)] == ["d", "b", "a"]
    assert [i for i, _ in event_items(cm)] == ["b", "a"]
    assert cm[0].findtext(".//{http://jabber.org/protocol/shim}header") == "sports"
    alice.fails("set", ps(f"<publish node='sports'><item>{entry('x')}</item></publish>"), "feature-not-implemented")
    items = alice.ok("get", "<query xmlns='http://jabber.org/protocol/disco#items' node='sports'/>")
    assert {i.get("node") for i in items.iter("{http://jabber.org/protocol/disco#items}item")} == {"ball", "anthem"}


def test_virtual_nodetree(tmp_path):
    w = make_wire(tmp_path, ["a"], nodetree="virtual")
    alice, bob = Client(w, "a", "alice"), Client(w, "a", "bob")
    bob.ok("set", ps(f"<subscribe node='any/thing' jid='{bob.bare}'/>"))
    alice.fails("set", ps(f"<publish node='any/thing'><item>{entry('x')}</item></publish>"), "forbidden")
    w.cores["a"].services["pubsub"].tree.get(SVC, "any/thing").config["publish_model"] = "open"
    alice.ok("set", ps(f"<publish node='any/thing'><item id='v'>{entry('x')}</item></publish>"))
    assert event_items(bob.events()) == [("v", "x")]


def test_service_disco(wire):
    alice = Client(wire, "a", "alice")
    info = alice.ok("get", "<query xmlns='http://jabber.org/protocol/disco#info'/>")
    feats = {f.get("var") for f in info.iter("{http://jabber.org/protocol/disco#info}feature")}
    assert PS in feats and PS + "#publish" in feats and PS + "#collections" in feats
    items = alice.ok("get", "<query xmlns='http://jabber.org/protocol/disco#items'/>", to="localhost")
    assert SVC in {i.get("jid") for i in items.iter("{http://jabber.org/protocol/disco#items}item")}


def test_hooks_and_a_node_plugin_added_by_a_module(wire):
    core = wire.cores["a"]
    seen = []
    core.hooks.add("pubsub_create_node", lambda host, node, owner, now: seen.append(("create", node)))
    core.hooks.add("pubsub_publish_item", lambda host, node, item, now: seen.append(("publish", node, item.id)))
    core.hooks.add("pubsub_delete_node", lambda host, node, now: seen.append(("delete", node)))
    from bridges.xmpp.pubsub.nodes import FlatNode

    class NoRetract(FlatNode):
        name = "noretract"
        features = tuple(f for f in FlatNode.features if f != "retract-items")

    core.items.add("pubsub-node-plugin", NoRetract(), "test")
    svc = core.services["pubsub"]
    svc.opts = svc.opts.model_copy(update={"node_plugin": "noretract"})
    alice = Client(wire, "a", "alice")
    alice.ok("set", ps("<create node='h'/>"))
    alice.ok("set", ps(f"<publish node='h'><item id='x'>{entry('x')}</item></publish>"))
    alice.fails("set", ps("<retract node='h'><item id='x'/></retract>"), "feature-not-implemented", "unsupported")
    alice.ok("set", owner("<delete node='h'/>"))
    assert seen == [("create", "h"), ("publish", "h", "x"), ("delete", "h")]


# ---------------------------------------------------------------------------- MQTT: one namespace
def test_topic_items_both_ways_with_wildcards(wire):
    core = wire.cores["a"]
    topics = core.services["topics"]
    alice, bob = Client(wire, "a", "alice"), Client(wire, "a", "bob")
    got = []

    class Mqtt:
        online = True

        def item_published(self, item, options, now):
            got.append((item.topic, item.payload, item.qos))

        def accepts(self, item):
            return True

    topics.subscribe("home/#", Mqtt(), None)
    alice.ok("set", ps("<create node='home'/><configure>" + config(node_type="collection") + "</configure>"))
    alice.ok("set", ps("<create node='home/kitchen'/>"))
    alice.ok("set", ps(f"<publish node='home/kitchen'><item id='k1'>{entry('21')}</item></publish>"))
    assert got == [("home/kitchen", b'<entry xmlns="urn:example:e">21</entry>', 1)]
    opts = form(PS + "#subscribe_options", subscription_depth="all")
    bob.ok("set", ps(f"<subscribe node='home' jid='{bob.bare}'/><options>{opts}</options>"))
    bob.events()
    topics.publish(TopicItem("home/kitchen/temp", b"22.5", 0, False), wire.now)      # MQTT, not XML
    topics.publish(TopicItem("home/xml", b"<t xmlns='urn:t'>1</t>", 0, True), wire.now)
    raw = bytes(range(256))
    topics.publish(TopicItem("home/raw", raw, 0, False), wire.now)
    ev = bob.events()
    items = [i for m in ev for i in m.iter("{%s}item" % EVENT)]
    assert len(items) == 3
    assert items[0][0].tag == "{urn:relaynet:mqtt:0}mqtt" and items[0][0].text == "22.5"
    assert items[1][0].tag == "{urn:t}t"
    assert base64.b64decode(items[2][0].text) == raw
    svc = core.services["pubsub"]
    assert svc.tree.get(SVC, "home/raw").last_item().payload == raw           # byte-exact
    # an XMPP publish of the MQTT payload element goes back to MQTT byte for byte
    got.clear()
    payload = items[2][0]
    alice.ok("set", ps(f"<publish node='home/raw'><item>{etree.tostring(payload).decode()}</item></publish>"))
    assert got[-1][1] == raw
    # a retained message is the node's last item; clearing it purges the node
    assert item_ids(bob.ok("get", ps("<items node='home/xml'/>")))
    topics.publish(TopicItem("home/xml", b"", 0, True), wire.now)
    assert item_ids(bob.ok("get", ps("<items node='home/xml'/>"))) == []
    # MQTT's channel and direct-message topics are chats, not nodes
    topics.publish(TopicItem("chan/test", b"hello", 0, False), wire.now)
    topics.publish(TopicItem("users/bob/inbox", b"secret", 0, False), wire.now)
    assert svc.tree.get(SVC, "chan/test") is None and svc.tree.get(SVC, "users/bob/inbox") is None


def test_topic_acl_governs_both_sides(wire):
    core = wire.cores["a"]
    from relay.core.topic_acl import TopicAcl

    class R:
        def __init__(self, action, topic, allow):
            self.action, self.topic, self.allow, self.who = action, topic, allow, "all"

    core.services["topics"].acl = TopicAcl([R("all", "secret/#", False)], True, lambda *a: True)
    alice = Client(wire, "a", "alice")
    alice.fails("set", ps(f"<publish node='secret/x'><item>{entry('x')}</item></publish>"), "forbidden")
    alice.ok("set", ps(f"<publish node='public/x'><item>{entry('x')}</item></publish>"))
    alice.ok("set", ps("<create node='secret/y'/>"))
    alice.fails("set", ps(f"<subscribe node='secret/y' jid='{alice.bare}'/>"), "forbidden")


# ---------------------------------------------------------------------------- PEP
def caps_ver(features: list[str]) -> str:
    s = "client/pc//test<" + "".join(f + "<" for f in sorted(features))
    return base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()


def with_caps(c: Client, features: list[str]) -> None:
    ver = caps_ver(features)
    c.feed(f"<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='urn:test' ver='{ver}'/>"
           "</presence>")
    out = c.stanzas()
    asks = [el for el in out if el.tag == C + "iq" and el.get("type") == "get"]
    c.inbox.extend(el for el in out if el not in asks)
    if not asks:
        return
    ask = asks[0]
    feats = "".join(f"<feature var='{f}'/>" for f in features)
    c.feed(f"<iq type='result' id='{ask.get('id')}' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'"
           f" node='{ask[0].get('node')}'><identity category='client' type='pc' name='test'/>{feats}</query></iq>")


def test_pep_notifications_filtered_by_caps(wire):
    roster = wire.cores["a"].services["xmpp"].roster
    roster.put("alice", "bob@localhost", wire.now, subscription="both")
    roster.put("bob", "alice@localhost", wire.now, subscription="both")
    roster.put("alice", "carol@localhost", wire.now, subscription="both")
    roster.put("carol", "alice@localhost", wire.now, subscription="both")
    alice, bob, carol = Client(wire, "a", "alice"), Client(wire, "a", "bob"), Client(wire, "a", "carol")
    dave = Client(wire, "a", "carol", "other")        # carol's second resource: no +notify
    tune = "http://jabber.org/protocol/tune"
    with_caps(bob, [tune + "+notify", "http://jabber.org/protocol/caps"])
    with_caps(carol, ["urn:xmpp:avatar:metadata+notify"])
    with_caps(dave, [])
    for c in (alice, bob, carol, dave):
        c.got()
    assert caps_ver([tune + "+notify", "http://jabber.org/protocol/caps"]) in \
        wire.cores["a"].modules.loaded["pubsub"].state["caps"].by_ver       # verified, shared by ver
    alice.ok("set", ps(f"<publish node='{tune}'><item id='current'><tune xmlns='{tune}'><artist>X</artist></tune>"
                       "</item></publish>"), to=None)
    ev = bob.events()
    assert len(ev) == 1 and ev[0].get("from") == "alice@localhost"
    assert ev[0].find(".//{%s}artist" % tune).text == "X"
    assert carol.events() == [] and dave.events() == []
    # a contact's PEP items are readable to the contact, not to a stranger (presence access)
    bob.ok("get", ps(f"<items node='{tune}'/>"), to="alice@localhost")
    roster.remove("carol", "alice@localhost", wire.now)
    roster.remove("alice", "carol@localhost", wire.now)
    carol.fails("get", ps(f"<items node='{tune}'/>"), "not-authorized", to="alice@localhost")
    bob.fails("set", ps(f"<publish node='{tune}'><item>{entry('x')}</item></publish>"), "forbidden",
              to="alice@localhost")
    # a new resource with +notify gets the last item when its caps are known
    bob2 = Client(wire, "a", "bob", "phone")
    with_caps(bob2, [tune + "+notify", "http://jabber.org/protocol/caps"])
    assert any(m.find(".//{%s}artist" % tune) is not None for m in bob2.events())


def test_account_disco_info_has_the_pep_identity(wire):
    """XEP-0163 §6.1: the account's disco#info says pubsub/pep (aioxmpp publishes nothing on PEP without it)."""
    alice = Client(wire, "a", "alice")
    got = alice.ok("get", f"<query xmlns='{DISCO_INFO}'/>", to="alice@localhost")
    identities = {(i.get("category"), i.get("type")) for i in got.iter(f"{{{DISCO_INFO}}}identity")}
    assert identities == {("account", "registered"), ("pubsub", "pep")}
    features = {f.get("var") for f in got.iter(f"{{{DISCO_INFO}}}feature")}
    assert PS + "#publish" in features


def test_pep_bookmarks_avatars_private_and_omemo(wire):
    roster = wire.cores["a"].services["xmpp"].roster
    roster.put("alice", "bob@localhost", wire.now, subscription="both")
    roster.put("bob", "alice@localhost", wire.now, subscription="both")
    alice, bob, carol = Client(wire, "a", "alice"), Client(wire, "a", "bob"), Client(wire, "a", "carol")
    private = form(PS + "#publish-options", persist_items="true", access_model="whitelist", max_items="max",
                   send_last_published_item="never")
    bm = "urn:xmpp:bookmarks:1"
    alice.ok("set", ps(f"<publish node='{bm}'><item id='room@conference.localhost'><conference xmlns='{bm}' "
                       f"name='Room' autojoin='true'/></item></publish><publish-options>{private}</publish-options>"),
             to=None)
    alice.ok("set", ps(f"<publish node='{bm}'><item id='other@conference.localhost'><conference xmlns='{bm}'/>"
                       f"</item></publish><publish-options>{private}</publish-options>"), to=None)
    assert len(item_ids(alice.ok("get", ps(f"<items node='{bm}'/>"), to=None))) == 2
    bob.fails("get", ps(f"<items node='{bm}'/>"), "not-allowed", to="alice@localhost")
    # avatar: data + metadata, readable by a contact
    data = base64.b64encode(b"\x89PNG...").decode()
    alice.ok("set", ps(f"<publish node='urn:xmpp:avatar:data'><item id='abc'><data xmlns='urn:xmpp:avatar:data'>"
                       f"{data}</data></item></publish>"), to=None)
    alice.ok("set", ps("<publish node='urn:xmpp:avatar:metadata'><item id='abc'><metadata xmlns='urn:xmpp:avatar:"
                       "metadata'><info id='abc' bytes='7' type='image/png'/></metadata></item></publish>"), to=None)
    got = bob.ok("get", ps("<items node='urn:xmpp:avatar:data'><item id='abc'/></items>"), to="alice@localhost")
    assert got.findtext(".//{urn:xmpp:avatar:data}data") == data
    # OMEMO bundles are open: anyone may fetch them
    openo = form(PS + "#publish-options", access_model="open")
    alice.ok("set", ps("<publish node='eu.siacs.conversations.axolotl.bundles:1'><item id='current'><bundle "
                       "xmlns='eu.siacs.conversations.axolotl'/></item></publish>"
                       f"<publish-options>{openo}</publish-options>"), to=None)
    carol.ok("get", ps("<items node='eu.siacs.conversations.axolotl.bundles:1'/>"), to="alice@localhost")
    disco = alice.ok("get", "<query xmlns='http://jabber.org/protocol/disco#items'/>", to=None)
    assert bm in {i.get("node") for i in disco.iter("{http://jabber.org/protocol/disco#items}item")}
    info = alice.ok("get", "<query xmlns='http://jabber.org/protocol/disco#info'/>", to=None)
    assert PS + "#publish-options" in {f.get("var") for f in info.iter("{http://jabber.org/protocol/disco#info}feature")}


# ---------------------------------------------------------------------------- two servers
def test_publish_crosses_to_the_server_with_subscribers_and_state_converges(tmp_path):
    w = make_wire(tmp_path, ["a", "b", "c"])
    w.link("a", "b")
    w.link("a", "c")
    alice, bob = Client(w, "a", "alice"), Client(w, "c", "bob")
    alice.ok("set", ps("<create node='tree/news'/>"))
    w.pump()
    assert w.cores["c"].services["pubsub"].tree.get(SVC, "tree/news") is not None
    bob.ok("set", ps(f"<subscribe node='tree/news' jid='{bob.bare}'/>"))
    w.tick(1.0)            # the topic filter sets are announced (debounced)
    sent = []
    router = w.cores["a"].net.router
    send = router.send_extension
    router.send_extension = lambda ftype, payload, servers=None, exclude_link=None: (
        sent.append((ftype, servers)), send(ftype, payload, servers, exclude_link))
    alice.ok("set", ps(f"<publish node='tree/news'><item id='x1'>{entry('over the tree')}</item></publish>"))
    w.pump()
    assert event_items(bob.events()) == [("x1", "over the tree")]
    assert "x1" in w.cores["c"].services["pubsub"].tree.get(SVC, "tree/news").items
    # through the topic federation: once, and only towards the server with a subscriber
    assert sent == [("MQTT_PUB", {"003"})]


def test_pep_event_reaches_a_contact_on_another_server(tmp_path):
    w = make_wire(tmp_path, ["a", "b"])
    w.link("a", "b")
    w.cores["b"].services["xmpp"].roster.put("bob", "alice@localhost", w.now, subscription="both")
    alice, bob = Client(w, "a", "alice"), Client(w, "b", "bob")
    tune = "http://jabber.org/protocol/tune"
    with_caps(bob, [tune + "+notify"])
    bob.got()
    alice.ok("set", ps(f"<publish node='{tune}'><item id='t'><tune xmlns='{tune}'><title>Far</title></tune>"
                       "</item></publish>"), to=None)
    w.pump()
    ev = bob.events()
    assert len(ev) == 1 and ev[0].findtext(".//{%s}title" % tune) == "Far"
    assert ev[0].get("from") == "alice@localhost"


def test_node_state_and_items_converge_after_a_netsplit(tmp_path):
    w = make_wire(tmp_path, ["a", "b"])
    w.link("a", "b")
    alice_a = Client(w, "a", "alice")
    alice_a.ok("set", ps("<create node='split'/><configure>" + config(max_items="50") + "</configure>"))
    alice_a.ok("set", ps(f"<publish node='split'><item id='before'>{entry('0')}</item></publish>"))
    alice_a.ok("set", ps("<create node='gone'/>"))
    w.pump()
    nb = w.cores["b"].services["pubsub"].tree.get(SVC, "split")
    assert nb is not None and "before" not in nb.items       # no subscriber on b: the item did not go there
    w.unlink("a", "b")
    w.tick(1.0)
    alice_b = Client(w, "b", "alice", "other")
    alice_a.ok("set", ps(f"<publish node='split'><item id='on-a'>{entry('a')}</item></publish>"))
    w.tick(0.5)
    alice_b.ok("set", ps(f"<publish node='split'><item id='on-b'>{entry('b')}</item></publish>"))
    alice_a.ok("set", owner("<delete node='gone'/>"))
    alice_b.ok("set", ps(f"<publish node='gone'><item>{entry('b')}</item></publish>"))
    w.tick(1.0)
    alice_b.ok("set", owner(f"<configure node='split'>{config(title='newest')}</configure>"))
    alice_b.ok("set", owner("<affiliations node='split'><affiliation jid='bob@localhost' affiliation='publisher'/>"
                            "</affiliations>"))
    w.link("a", "b")
    w.tick(1.0)
    na = w.cores["a"].services["pubsub"].tree.get(SVC, "split")
    nb = w.cores["b"].services["pubsub"].tree.get(SVC, "split")
    for core in ("a", "b"):
        assert w.cores[core].services["pubsub"].tree.get(SVC, "gone") is None      # the delete wins
    for n in (na, nb):
        assert list(n.items) == ["before", "on-a", "on-b"]
        assert n.config["title"] == "newest" and n.affiliations["bob@localhost"] == "publisher"


def test_hostile_requests_get_clear_errors_and_the_service_goes_on(wire):
    alice, bob = Client(wire, "a", "alice"), Client(wire, "a", "bob")
    alice.ok("set", ps("<create node='n'/>"))
    alice.fails("set", ps("<create node='" + "x" * 2000 + "'/>"), "not-acceptable")
    alice.fails("set", ps(f"<publish node='n'><item id='{'i' * 2000}'>{entry('x')}</item></publish>"),
                "not-acceptable")
    alice.fails("set", ps(""), "bad-request")
    alice.fails("get", ps("<items node='n' max_items='lots'/>"), "bad-request")
    alice.fails("get", ps("<items node='n'/><set xmlns='http://jabber.org/protocol/rsm'><max>x</max></set>"),
                "bad-request")
    alice.fails("get", ps("<items node='n'/><set xmlns='http://jabber.org/protocol/rsm'><after>none</after></set>"),
                "item-not-found")
    alice.fails("set", owner("<configure node='n'><x xmlns='jabber:x:data' type='submit'>"
                             "<field var='pubsub#deliver_payloads'><value>maybe</value></field></x></configure>"),
                "not-acceptable")
    alice.fails("set", owner("<configure node='n'/>"), "bad-request")
    alice.fails("get", ps("<items node='n'/>"), "item-not-found", to="nobody@pubsub.localhost")
    alice.fails("get", "<query xmlns='urn:example:nothing'/>", "service-unavailable")
    # a stranger's answer with the id of a caps ask is not taken for the asked resource
    caps = wire.cores["a"].modules.loaded["pubsub"].state["caps"]
    alice.feed("<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='unknown='/></presence>")
    ask = next(el for el in alice.stanzas() if el.tag == C + "iq" and el.get("type") == "get")
    bob.feed(f"<iq type='result' id='{ask.get('id')}' to='localhost'><query xmlns='http://jabber.org/protocol/"
             "disco#info'><feature var='urn:x+notify'/></query></iq>")
    assert alice.jid not in caps.by_jid and ask.get("id") in caps.asked
    alice.ok("get", ps("<items node='n'/>"))


# ---------------------------------------------------------------------------- items a server never got
def test_a_server_without_subscribers_asks_for_the_items_before_it_answers(tmp_path):
    w = make_wire(tmp_path, ["a", "b", "c"])
    w.link("a", "b")
    w.link("b", "c")
    alice, bob = Client(w, "a", "alice"), Client(w, "c", "bob")
    alice.ok("set", ps("<create node='far/news'/>"))
    for n in range(3):
        alice.ok("set", ps(f"<publish node='far/news'><item id='i{n}'>{entry(str(n))}</item></publish>"))
    w.pump()
    far = w.cores["c"].services["pubsub"]
    assert far.tree.get(SVC, "far/news").items == {}           # nobody on c wanted them: they did not go there
    # a retrieval on c: c asks a and b, and answers once both did (within the same pump here)
    got = bob.ok("get", ps("<items node='far/news'/>"))
    assert item_ids(got) == ["i2", "i1", "i0"]
    assert far.fed.stats["fetches"] == 1
    # nobody subscribes on c: the next retrieval asks again (an item published meanwhile is there)
    alice.ok("set", ps(f"<publish node='far/news'><item id='i3'>{entry('3')}</item></publish>"))
    assert item_ids(bob.ok("get", ps("<items node='far/news' max_items='1'/>"))) == ["i3"]
    assert far.fed.stats["fetches"] == 2
    # a subscriber on c: its last item comes after the answer; then the items are routed to c, so
    # c holds them and does not ask again
    alice.ok("set", ps("<create node='far/other'/>"))
    alice.ok("set", ps(f"<publish node='far/other'><item id='o1'>{entry('old')}</item></publish>"))
    w.pump()
    bob.ok("set", ps(f"<subscribe node='far/other' jid='{bob.bare}'/>"))
    assert event_items(bob.events()) == [("o1", "old")]
    assert far.fed.stats["fetches"] == 3
    w.tick(1.0)                                                   # c's topic filters reach a
    alice.ok("set", ps(f"<publish node='far/other'><item id='o2'>{entry('new')}</item></publish>"))
    w.pump()
    assert event_items(bob.events()) == [("o2", "new")]
    assert item_ids(bob.ok("get", ps("<items node='far/other'/>"))) == ["o2", "o1"]
    assert far.fed.stats["fetches"] == 3
    # once bob unsubscribes (the filters are refreshed each second), c asks again
    subid = next(iter(far.tree.get(SVC, "far/other").subscriptions))
    bob.ok("set", ps(f"<unsubscribe node='far/other' jid='{bob.bare}' subid='{subid}'/>"))
    w.tick(1.0)
    bob.ok("get", ps("<items node='far/other'/>"))
    assert far.fed.stats["fetches"] == 4


def test_a_fetch_that_gets_no_answer_is_answered_after_the_timeout(tmp_path):
    w = make_wire(tmp_path, ["a", "b"], fetch_timeout=3.0)
    w.link("a", "b")
    alice, bob = Client(w, "a", "alice"), Client(w, "b", "bob")
    alice.ok("set", ps("<create node='slow/news'/>"))
    alice.ok("set", ps(f"<publish node='slow/news'><item id='s1'>{entry('1')}</item></publish>"))
    w.pump()
    w.cores["a"].services["pubsub"].fed.answer_fetch = lambda origin, p: None     # a never answers
    bob.feed(f"<iq type='get' id='slow' to='{SVC}'>" + ps("<items node='slow/news'/>") + "</iq>")
    assert [s for s in bob.stanzas() if s.get("id") == "slow"] == []              # not answered yet
    w.tick(3.5)
    answer = [s for s in bob.stanzas() if s.get("id") == "slow"]
    assert len(answer) == 1 and answer[0].get("type") == "result" and item_ids(answer[0]) == []


def test_hostile_fetch_frames_are_dropped(tmp_path):
    w = make_wire(tmp_path, ["a", "b"])
    w.link("a", "b")
    fed = w.cores["b"].services["pubsub"].fed
    for p in ({}, {"host": SVC}, {"host": SVC, "node": "x"}, {"host": SVC, "node": "x", "req": "r", "items": [{}],
                                                               "last": True, "retracted": {"i": "no"}}):
        for ftype in ("PUBSUB_FETCH", "PUBSUB_HELD"):
            assert fed.on_extension(ftype, "001", p) is True
    assert Client(w, "b", "bob").ok("get", ps("<subscriptions/>")) is not None


# ---------------------------------------------------------------------------- retracts and purges across a split
def test_a_retract_and_a_purge_made_during_a_split_stay_after_the_netjoin(tmp_path):
    w = make_wire(tmp_path, ["a", "b"])
    w.link("a", "b")
    alice_a = Client(w, "a", "alice")
    for name in ("keep", "purged"):
        alice_a.ok("set", ps(f"<create node='{name}'/><configure>" + config(max_items="50") + "</configure>"))
        for i in ("x", "y"):
            alice_a.ok("set", ps(f"<publish node='{name}'><item id='{i}'>{entry(i)}</item></publish>"))
    w.pump()
    alice_b = Client(w, "b", "alice", "other")
    for name in ("keep", "purged"):                    # b fetches them: both sides hold x and y
        assert item_ids(alice_b.ok("get", ps(f"<items node='{name}'/>"))) == ["y", "x"]
    w.unlink("a", "b")
    w.tick(1.0)
    alice_b.ok("set", ps("<retract node='keep'><item id='x'/></retract>"))
    alice_a.ok("set", owner("<purge node='purged'/>"))
    w.tick(1.0)
    alice_b.ok("set", ps(f"<publish node='purged'><item id='z'>{entry('after the purge')}</item></publish>"))
    alice_a.ok("set", ps(f"<publish node='keep'><item id='w'>{entry('during the split')}</item></publish>"))
    w.link("a", "b")
    w.tick(1.0)
    for core in ("a", "b"):
        tree = w.cores[core].services["pubsub"].tree
        assert list(tree.get(SVC, "keep").items) == ["y", "w"], core          # x stays retracted
        assert list(tree.get(SVC, "purged").items) == ["z"], core             # the purge stays, z is newer
    # and a second netjoin changes nothing
    w.unlink("a", "b")
    w.link("a", "b")
    w.tick(1.0)
    for core in ("a", "b"):
        assert list(w.cores[core].services["pubsub"].tree.get(SVC, "keep").items) == ["y", "w"]


def test_a_pep_publish_looks_only_at_the_resources_that_want_its_node(wire):
    roster = wire.cores["a"].services["xmpp"].roster
    for name in ("bob", "carol"):
        roster.put("alice", f"{name}@localhost", wire.now, subscription="both")
        roster.put(name, "alice@localhost", wire.now, subscription="both")
    svc = wire.cores["a"].services["pubsub"]
    caps = wire.cores["a"].modules.loaded["pubsub"].state["caps"]
    tune = "http://jabber.org/protocol/tune"
    alice = Client(wire, "a", "alice")
    bob, bob2 = Client(wire, "a", "bob"), Client(wire, "a", "bob", "phone")
    crowd = [Client(wire, "a", "carol", f"r{i}") for i in range(20)]     # online, not wanting tunes
    for c in crowd:
        with_caps(c, ["urn:xmpp:avatar:metadata+notify"])
    with_caps(bob, [tune + "+notify"])
    with_caps(bob2, [tune + "+notify"])
    for c in (alice, bob, bob2, *crowd):
        c.got()
    asked = []
    real = svc.presence_ok
    svc.presence_ok = lambda owner, bare: asked.append(bare) or real(owner, bare)

    def publish(text: str) -> None:
        alice.ok("set", ps(f"<publish node='{tune}'><item id='current'><tune xmlns='{tune}'><title>{text}</title>"
                           "</tune></item></publish>"), to=None)
    publish("one")
    assert [len(c.events()) for c in (bob, bob2)] == [1, 1]
    assert all(c.events() == [] for c in crowd)
    assert set(asked) == {"bob@localhost"} and len(asked) <= 2      # bob's account once; carol's never
    # a presence without caps, and a resource gone: out of the index
    bob2.feed("<presence/>")
    bob.s.connection_lost("gone", wire.now)
    wire.pump()
    assert caps.notify.get(tune) is None
    asked.clear()
    publish("two")
    assert bob2.events() == [] and asked == []
