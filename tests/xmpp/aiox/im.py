"""Issue 15 with aioxmpp's own services: login, roster and presence, chat, offline delivery, MAM (raw
XSOs: aioxmpp 0.13 has no MAM service), carbons, blocking, vCard, private storage, ad-hoc, ping."""

from __future__ import annotations

import aiosasl
import aiosasl.channel_binding
import aioxmpp
import aioxmpp.adhoc
import aioxmpp.blocking
import aioxmpp.carbons
import aioxmpp.forms
import aioxmpp.misc
import aioxmpp.ping
import aioxmpp.private_xml
import aioxmpp.rsm.xso as rsm
import aioxmpp.vcard
import aioxmpp.vcard.xso
import aioxmpp.xso as xso
from common import MECHANISMS, Exporter, Inbox, ServerEndPoint, body_of, error_condition, jid, scenario, signal, until
from lxml import etree

MAM = "urn:xmpp:mam:2"
DOMAIN = jid("localhost")


def chat(to: str, body: str) -> aioxmpp.Message:
    m = aioxmpp.Message(type_=aioxmpp.MessageType.CHAT, to=jid(to))
    m.body[None] = body
    return m


@scenario
async def login(env, binding: str | None = None, password: str = "secret"):
    """STARTTLS, then SCRAM (or SCRAM-*-PLUS with `binding`), bind, ping the server (XEP-0199)."""
    provider = {None: None, "tls-server-end-point": ServerEndPoint, "tls-exporter": Exporter,
                "tls-unique": aiosasl.channel_binding.TLSUnique}[binding]
    env.tls12 = binding == "tls-unique"
    try:
        c = await env.online("alice@localhost/login", password=password, presence=False, binding=provider)
    except aiosasl.AuthenticationFailure as e:
        return {"mechanisms": MECHANISMS, "refused": str(e)}
    await aioxmpp.ping.ping(c, DOMAIN)
    tls = c.stream._xmlstream.transport.get_extra_info("ssl_object").get_protocol_version_name()
    return {"mechanisms": MECHANISMS, "jid": str(c.local_jid), "tls": tls}


@scenario
async def roster_presence_chat(env):
    services = (aioxmpp.RosterClient, aioxmpp.PresenceClient)
    alice = await env.online("alice@localhost/a", *services)
    bob = await env.online("bob@localhost/b", *services)
    a_roster, b_roster = alice.summon(aioxmpp.RosterClient), bob.summon(aioxmpp.RosterClient)
    # bob approves alice's request and asks back; alice approves his
    b_roster.on_subscribe.connect(lambda st: b_roster.approve(st.from_.bare()) or b_roster.subscribe(st.from_.bare()))
    a_roster.on_subscribe.connect(lambda st: a_roster.approve(st.from_.bare()))
    await a_roster.set_entry(jid("bob@localhost"), name="Bob", add_to_groups={"friends"})
    a_roster.subscribe(jid("bob@localhost"))
    both = lambda r, who: r.items.get(jid(who)) is not None and r.items[jid(who)].subscription == "both"  # noqa: E731
    await until(lambda: both(a_roster, "bob@localhost") and both(b_roster, "alice@localhost"), "mutual subscription")
    presence = alice.summon(aioxmpp.PresenceClient)
    await until(lambda: presence.get_most_available_stanza(jid("bob@localhost")) is not None, "bob's presence")
    full = presence.get_most_available_stanza(jid("bob@localhost")).from_
    a_inbox, b_inbox = Inbox(alice), Inbox(bob)
    alice.enqueue(chat("bob@localhost", "hello bob"))
    got = await b_inbox.wait(lambda m: body_of(m) == "hello bob", "alice's message")
    bob.enqueue(chat(str(got.from_), "hello alice"))
    back = await a_inbox.wait(lambda m: body_of(m) == "hello alice", "bob's answer")
    item = a_roster.items[jid("bob@localhost")]
    # a presence change, then unavailable when bob's client stops
    away = await signal(presence.on_changed, "bob away",
                        lambda full, st, **_: full.bare() == jid("bob@localhost") and st.show == aioxmpp.PresenceShow.AWAY)
    bob.summon(aioxmpp.PresenceServer).set_presence(aioxmpp.PresenceState(True, aioxmpp.PresenceShow.AWAY),
                                                    status="brb")
    (_, st), _ = await away
    gone = await signal(presence.on_unavailable, "bob unavailable",
                        lambda full, st, **_: full.bare() == jid("bob@localhost"))
    bob.stop()
    await gone
    return {"alice_item": {"name": item.name, "groups": sorted(item.groups), "subscription": item.subscription},
            "bob_item": b_roster.items[jid("alice@localhost")].subscription,
            "bob_seen_as": str(full), "from_alice": str(got.from_), "from_bob": str(back.from_),
            "away_status": st.status.any(), "bob_after": presence.get_most_available_stanza(jid("bob@localhost"))}


@scenario
async def send_chat(env, sender: str, to: str, bodies: list):
    c = await env.online(sender)
    for b in bodies:
        c.enqueue(chat(to, b))
    await aioxmpp.ping.ping(c, DOMAIN)          # the server has taken them once it answers this
    return {}


@scenario
async def receive(env, address: str, bodies: list):
    """Log in (an inbox open before the stream starts) and wait for `bodies`."""
    box = {}
    await env.online(address, before=lambda c: box.setdefault("inbox", Inbox(c)))
    got = [await box["inbox"].wait(lambda m, b=b: body_of(m) == b, b) for b in bodies]
    return {"got": [{"body": body_of(m), "from": str(m.from_),
                     "delayed": bool(m.xep0203_delay) and m.xep0203_delay[0].stamp is not None} for m in got]}


class MamQuery(xso.XSO):
    TAG = (MAM, "query")
    queryid = xso.Attr("queryid", default=None)
    form = xso.Child([aioxmpp.forms.Data])
    rsm = xso.Child([rsm.ResultSetMetadata])


class MamFin(xso.XSO):
    TAG = (MAM, "fin")
    complete = xso.Attr("complete", type_=xso.Bool(), default=False)
    rsm = xso.Child([rsm.ResultSetMetadata])


class MamResult(xso.XSO):
    TAG = (MAM, "result")
    queryid = xso.Attr("queryid", default=None)
    id_ = xso.Attr("id")
    forwarded = xso.Child([aioxmpp.misc.Forwarded])


aioxmpp.IQ.as_payload_class(MamQuery)
aioxmpp.IQ.as_payload_class(MamFin)
aioxmpp.Message.xep0313_result = xso.Child([MamResult])


def mam_form(with_: str) -> aioxmpp.forms.Data:
    form = aioxmpp.forms.Data(aioxmpp.forms.DataType.SUBMIT)
    form.fields.append(aioxmpp.forms.Field(var="FORM_TYPE", type_=aioxmpp.forms.FieldType.HIDDEN, values=[MAM]))
    form.fields.append(aioxmpp.forms.Field(var="with", values=[with_]))
    return form


@scenario
async def mam_paging(env, partner: str, owner: str, count: int, page: int):
    """`partner` sends `count` messages to `owner`, who pages through its archive with them."""
    alice = await env.online(partner + "/a")
    bob = await env.online(owner + "/b")
    got = Inbox(bob)
    for i in range(count):
        alice.enqueue(chat(owner, f"m{i}"))
    await got.wait(lambda m: body_of(m) == f"m{count - 1}", "the last message")
    pages, after = [], None
    while True:
        q = MamQuery()
        q.queryid = f"q{len(pages)}"
        q.form = mam_form(partner)
        q.rsm = rsm.ResultSetMetadata()
        q.rsm.max_ = page
        if after is not None:
            q.rsm.after = rsm.After()
            q.rsm.after.value = after
        fin = await bob.send(aioxmpp.IQ(type_=aioxmpp.IQType.SET, payload=q))
        results = [m.xep0313_result for m in got.items
                   if m.xep0313_result is not None and m.xep0313_result.queryid == q.queryid]
        pages.append({"bodies": [body_of(r.forwarded.stanza) for r in results], "complete": fin.complete,
                      "count": fin.rsm.count, "from": sorted({str(r.forwarded.stanza.from_.bare()) for r in results})})
        if fin.complete or not results:
            return {"pages": pages}
        after = fin.rsm.last.value


@scenario
async def carbons(env):
    alice = await env.online("alice@localhost/a")
    phone = await env.online("bob@localhost/phone", aioxmpp.carbons.CarbonsClient)
    laptop = await env.online("bob@localhost/laptop", aioxmpp.carbons.CarbonsClient)
    for c in (phone, laptop):
        await c.summon(aioxmpp.carbons.CarbonsClient).enable()
    a_box, p_box, l_box = Inbox(alice), Inbox(phone), Inbox(laptop)
    alice.enqueue(chat("bob@localhost/phone", "to the phone"))
    await p_box.wait(lambda m: body_of(m) == "to the phone", "the message at the phone")

    def carbon(kind):
        def test(m):
            wrapped = getattr(m, "xep0280_" + kind)
            return wrapped is not None and wrapped.stanza is not None and body_of(wrapped.stanza)
        return test
    received = await l_box.wait(lambda m: carbon("received")(m) == "to the phone", "the received carbon")
    phone.enqueue(chat("alice@localhost/a", "from the phone"))
    await a_box.wait(lambda m: body_of(m) == "from the phone", "the answer at alice")
    sent = await l_box.wait(lambda m: carbon("sent")(m) == "from the phone", "the sent carbon")
    return {"received_from": str(received.from_), "received_inner_to": str(received.xep0280_received.stanza.to),
            "sent_inner_from": str(sent.xep0280_sent.stanza.from_),
            "alice_carbons": [repr(m) for m in a_box.items if m.xep0280_received or m.xep0280_sent]}


@scenario
async def blocking(env):
    bob = await env.online("bob@localhost/b", aioxmpp.blocking.BlockingClient)
    carol = await env.online("carol@localhost/c")
    alice = await env.online("alice@localhost/a")
    block = bob.summon(aioxmpp.blocking.BlockingClient)
    await block.block_jids([jid("carol@localhost")])
    listed = sorted(str(j) for j in block.blocklist)
    b_box, c_box = Inbox(bob), Inbox(carol)
    carol.enqueue(chat("bob@localhost", "let me in"))
    alice.enqueue(chat("bob@localhost", "after carol"))
    await b_box.wait(lambda m: body_of(m) == "after carol", "alice's message")
    blocked_delivered = "let me in" in b_box.bodies()
    bob.enqueue(chat("carol@localhost", "go away"))
    err = await b_box.wait(lambda m: m.type_ == aioxmpp.MessageType.ERROR, "the error for a message to carol")
    refused = error_condition(err.error)
    await block.unblock_jids([jid("carol@localhost")])
    carol.enqueue(chat("bob@localhost", "now?"))
    await b_box.wait(lambda m: body_of(m) == "now?", "carol's message after the unblock")
    return {"listed": listed, "blocked_delivered": blocked_delivered, "refused": refused,
            "after_unblock": sorted(str(j) for j in block.blocklist), "carol_got": c_box.bodies()}


VCARD = "vcard-temp"


@aioxmpp.private_xml.Query.as_payload_class
class Prefs(xso.XSO):
    TAG = ("urn:example:prefs", "prefs")
    color = xso.ChildText(("urn:example:prefs", "color"), default=None)


@scenario
async def vcard_private_adhoc_ping(env):
    alice = await env.online("alice@localhost/a", aioxmpp.vcard.VCardService, aioxmpp.private_xml.PrivateXMLService,
                             aioxmpp.adhoc.AdHocClient)
    bob = await env.online("bob@localhost/b", aioxmpp.vcard.VCardService, aioxmpp.PingService)
    card = aioxmpp.vcard.xso.VCard()
    etree.SubElement(card.elements, f"{{{VCARD}}}FN").text = "Alice Liddell"
    etree.SubElement(card.elements, f"{{{VCARD}}}NICKNAME").text = "alice"
    card.set_photo_data("image/png", b"\x89PNG\r\n\x1a\n" + bytes(range(32)))
    await alice.summon(aioxmpp.vcard.VCardService).set_vcard(card)
    got = await bob.summon(aioxmpp.vcard.VCardService).get_vcard(jid("alice@localhost"))
    fn = got.elements.findtext(f"{{{VCARD}}}FN")
    private = alice.summon(aioxmpp.private_xml.PrivateXMLService)
    prefs = Prefs()
    prefs.color = "teal"
    await private.set_private_xml(prefs)
    stored = await private.get_private_xml(Prefs())
    try:
        await bob.send(aioxmpp.IQ(type_=aioxmpp.IQType.GET, to=jid("alice@localhost"),
                                  payload=aioxmpp.private_xml.Query(Prefs())))
        foreign = None
    except aioxmpp.errors.XMPPError as e:
        foreign = error_condition(e)
    adhoc = alice.summon(aioxmpp.adhoc.AdHocClient)
    commands = await adhoc.get_commands(DOMAIN)
    session = await adhoc.execute(DOMAIN, "ping")
    notes = [n.body for n in session.response.notes]
    status = session.response.status.value
    await session.close()
    await aioxmpp.ping.ping(alice, jid("bob@localhost/b"))     # a client answers (XEP-0199 both ways)
    await aioxmpp.ping.ping(alice, DOMAIN)
    return {"fn": fn, "photo": got.get_photo_data() is not None and got.get_photo_mime_type(),
            "color": stored.registered_payload.color, "foreign_private": foreign,
            "commands": sorted(i.node for i in commands), "ping_status": status, "ping_notes": notes}
