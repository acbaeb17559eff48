"""Issue 17 with aioxmpp.pubsub: create, configure, publish, retrieve, subscribe and the notification,
retract, purge, delete, affiliations, and the error cases."""

from __future__ import annotations

import aioxmpp
import aioxmpp.avatar
import aioxmpp.forms
import aioxmpp.pubsub
import aioxmpp.pubsub.xso as psxso
import aioxmpp.xso as xso
from common import Inbox, befriend, error_condition, jid, scenario, signal

SVC = jid("pubsub.localhost")
PS = "http://jabber.org/protocol/pubsub"


@psxso.as_payload_class
class Entry(xso.XSO):
    TAG = ("urn:example:e", "entry")
    text = xso.Text(default="")


def entry(text: str) -> Entry:
    e = Entry()
    e.text = text
    return e


async def fails(coro) -> str:
    """The error condition the request gets ("ok" if it succeeded)."""
    try:
        await coro
    except aioxmpp.errors.XMPPError as e:
        return error_condition(e)
    return "ok"


def submit(form_type: str, **values) -> aioxmpp.forms.Data:
    data = aioxmpp.forms.Data(aioxmpp.forms.DataType.SUBMIT)
    data.fields.append(aioxmpp.forms.Field(var="FORM_TYPE", type_=aioxmpp.forms.FieldType.HIDDEN,
                                           values=[form_type]))
    for k, v in values.items():
        data.fields.append(aioxmpp.forms.Field(var="pubsub#" + k, values=[v]))
    return data


def field(data: aioxmpp.forms.Data, var: str):
    return next((f.values[0] if f.values else None) for f in data.fields if f.var == var)


@scenario
async def every_operation(env, node: str = "news"):
    svc = (aioxmpp.PubSubClient,)
    alice = await env.online("alice@localhost/p", *svc)
    bob = await env.online("bob@localhost/p", *svc)
    carol = await env.online("carol@localhost/p", *svc)
    a, b, c = (x.summon(aioxmpp.PubSubClient) for x in (alice, bob, carol))
    out = {}
    out["features"] = sorted(f.value.rsplit("#", 1)[1] for f in await a.get_features(SVC) if
                             f.value.rsplit("#", 1)[1] in ("publish", "create-nodes", "retract-items", "purge-nodes",
                                                     "delete-nodes", "subscribe", "modify-affiliations"))
    out["create"] = await a.create(SVC, node)
    out["create_again"] = await fails(a.create(SVC, node))
    out["instant"] = bool(await a.create(SVC))
    conf = await a.get_node_config(SVC, node)
    out["max_items_default"] = field(conf, "pubsub#max_items")
    await a.set_node_config(SVC, submit(PS + "#node_config", max_items="3", title="News"), node=node)
    conf = await a.get_node_config(SVC, node)
    out["configured"] = [field(conf, "pubsub#max_items"), field(conf, "pubsub#title")]
    sub = await b.subscribe(SVC, node)
    out["subscription"] = sub.payload.subscription
    # publish: the id back, the notification with the payload
    note = await signal(b.on_item_published, "the notification", lambda j, n, item, **_: item.id_ == "one")
    out["published_id"] = await a.publish(SVC, node, entry("first"), id_="one")
    (j, n, item), _ = await note
    out["notification"] = [str(j), n, item.id_, item.registered_payload.text]
    second = await a.publish(SVC, node, entry("second"))
    items = (await b.get_items(SVC, node)).payload.items
    out["items"] = [[i.id_ == second and "second" or i.id_, i.registered_payload.text] for i in items]
    out["max_items_1"] = [i.id_ == second for i in (await b.get_items(SVC, node, max_items=1)).payload.items]
    one = (await b.get_items_by_id(SVC, node, ["one"])).payload.items
    out["by_id"] = [i.registered_payload.text for i in one]
    out["missing_item"] = await fails(b.get_items_by_id(SVC, node, ["nope"]))
    # retract with notify
    gone = await signal(b.on_item_retracted, "the retraction", lambda j, n, id_, **_: id_ == "one")
    await a.retract(SVC, node, "one", notify=True)
    (_, _, rid), _ = await gone
    out["retracted"] = [rid, [i.id_ == second for i in (await b.get_items(SVC, node)).payload.items]]
    # affiliations: carol may publish, then is an outcast
    await a.change_node_affiliations(SVC, node, [(jid("carol@localhost"), "publisher")])
    affs = (await a.get_node_affiliations(SVC, node)).payload.affiliations
    out["affiliations"] = sorted([str(x.jid.bare()), x.affiliation] for x in affs)
    out["carol_publishes"] = await fails(c.publish(SVC, node, entry("carol"), id_="by-carol"))
    await a.change_node_affiliations(SVC, node, [(jid("carol@localhost"), "outcast")])
    out["outcast_reads"] = await fails(c.get_items(SVC, node))
    out["outcast_publishes"] = await fails(c.publish(SVC, node, entry("x")))
    subs = (await a.get_node_subscriptions(SVC, node)).payload.subscriptions
    out["subscribers"] = sorted(str(s.jid.bare()) for s in subs)
    # the other errors
    out["bob_publishes"] = await fails(b.publish(SVC, node, entry("x")))
    out["bob_purges"] = await fails(b.purge(SVC, node))
    out["bob_deletes"] = await fails(b.delete(SVC, node))
    out["missing_node"] = await fails(b.get_items(SVC, "missing"))
    out["bad_config"] = await fails(a.set_node_config(SVC, submit(PS + "#node_config", access_model="nope"),
                                                      node=node))
    # bob's own subscriptions; a whitelist node; publish-options that the node does not meet
    mine = (await b.get_subscriptions(SVC)).subscriptions
    out["bob_subscriptions"] = [[x.node, x.subscription] for x in mine]
    closed = node + "-closed"
    await a.create(SVC, closed)
    await a.set_node_config(SVC, submit(PS + "#node_config", access_model="whitelist"), node=closed)
    out["closed_subscribe"] = await fails(b.subscribe(SVC, closed))
    out["precondition"] = await fails(a.publish(SVC, closed, entry("x"),
                                                publish_options=submit(PS + "#publish-options", access_model="open")))
    out["unsubscribe_closed"] = await fails(b.unsubscribe(SVC, closed))
    # purge, then delete with the deletion seen by the subscriber
    b_box = Inbox(bob, early=True)
    await a.purge(SVC, node)
    purge = await b_box.wait(lambda m: m.xep0060_event is not None
                             and isinstance(m.xep0060_event.payload, psxso.EventPurge), "the purge notification")
    out["purged"] = purge.xep0060_event.payload.node
    out["after_purge"] = [i.id_ for i in (await b.get_items(SVC, node)).payload.items]
    deleted = await signal(b.on_node_deleted, "the deletion", lambda j, n, **_: n == node)
    await a.delete(SVC, node)
    (_, dnode), _ = await deleted
    out["deleted"] = dnode
    out["after_delete"] = await fails(b.get_items(SVC, node))
    return out


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(48))


@scenario
async def pep_avatar(env):
    """XEP-0084 through aioxmpp.avatar: alice publishes on her PEP nodes (data, then metadata with
    publish-options), bob, a contact whose caps ask for +notify, gets the metadata and the image."""
    svc = (aioxmpp.RosterClient, aioxmpp.PresenceClient, aioxmpp.avatar.AvatarService)
    alice = await env.online("alice@localhost/pep", *svc)
    bob = await env.online("bob@localhost/pep", *svc)
    await befriend(alice, bob)
    b_avatar = bob.summon(aioxmpp.avatar.AvatarService)
    changed = await signal(b_avatar.on_metadata_changed, "alice's avatar metadata",
                           lambda j, metadata, **_: j.bare() == jid("alice@localhost"))
    avatar = aioxmpp.avatar.AvatarSet()
    avatar.add_avatar_image("image/png", image_bytes=PNG, width=4, height=4)
    await alice.summon(aioxmpp.avatar.AvatarService).publish_avatar_set(avatar)
    (_, metadata), _ = await changed
    descriptors = await b_avatar.get_avatar_metadata(jid("alice@localhost"), require_fresh=True)
    image = await descriptors[0].get_image_bytes()
    return {"notified": [d.mime_type for d in metadata], "id": descriptors[0].id_ == avatar.png_id,
            "image": image == PNG, "nbytes": descriptors[0].nbytes}
