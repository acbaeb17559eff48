"""Issue 16 with aioxmpp.muc: join with history, subject, nick change, private message, voice, kick, ban,
members-only, password, invitations (mediated and direct), and moderation (XEP-0425, raw XSOs: aioxmpp
0.13 has no service for it)."""

from __future__ import annotations

import aioxmpp
import aioxmpp.im
import aioxmpp.misc
import aioxmpp.muc
import aioxmpp.muc.xso as mucxso
import aioxmpp.xso as xso
from common import Inbox, body_of, error_condition, jid, scenario, signal, until

DOMAIN = "conference.localhost"
MODERATE, RETRACT = "urn:xmpp:message-moderate:1", "urn:xmpp:message-retract:1"


class Retract(xso.XSO):
    TAG = (RETRACT, "retract")
    id_ = xso.Attr("id", default=None)


class Moderate(xso.XSO):
    TAG = (MODERATE, "moderate")
    id_ = xso.Attr("id")
    retract = xso.Child([Retract])
    reason = xso.ChildText((MODERATE, "reason"), default=None)


aioxmpp.Message.relay_retract = xso.Child([Retract])
aioxmpp.IQ.as_payload_class(Moderate)


def groupchat(room: aioxmpp.JID, body: str) -> aioxmpp.Message:
    m = aioxmpp.Message(type_=aioxmpp.MessageType.GROUPCHAT, to=room)
    m.body[None] = body
    return m


async def join(client, room, nick, **kw):
    """Join; the room, the messages it delivered (history first) and its on_message inbox."""
    r, fut = client.summon(aioxmpp.MUCClient).join(room, nick, autorejoin=False, **kw)
    got = []
    r.on_message.connect(lambda msg, member, source, **_: got.append(msg))
    await fut
    return r, got


async def join_error(client, room, nick, **kw) -> str:
    """The condition a refused join gets."""
    r, fut = client.summon(aioxmpp.MUCClient).join(room, nick, autorejoin=False, **kw)
    try:
        await fut
    except aioxmpp.errors.XMPPError as e:
        return error_condition(e)
    await r.leave()
    return "joined"


async def configure(client, room, **values):
    muc = client.summon(aioxmpp.MUCClient)
    form = aioxmpp.muc.ConfigurationForm.from_xso(await muc.get_room_config(room))
    for name, value in values.items():
        getattr(form, name).value = value
    await muc.set_room_config(room, form.render_reply())


def member(room, nick):
    return next(m for m in room.members if m.nick == nick)


@scenario
async def room_life(env, name: str = "club"):
    room = jid(f"{name}@{DOMAIN}")
    svc = (aioxmpp.MUCClient,)
    alice = await env.online("alice@localhost/m", *svc)
    bob = await env.online("bob@localhost/m", *svc)
    erin = await env.online("erin@localhost/m", *svc)
    out = {}
    a_room, a_got = await join(alice, room, "alice")
    out["creator"] = [a_room.me.role, a_room.me.affiliation]
    for i in range(4):
        alice.enqueue(groupchat(room, f"history {i}"))
    await until(lambda: len(a_got) == 4, "alice's four messages back")
    b_room, b_got = await join(bob, room, "bob", history=mucxso.History(maxstanzas=2))
    await until(lambda: len(b_got) >= 2, "the history")
    out["history"] = [body_of(m) for m in b_got]
    out["history_delayed"] = all(m.xep0203_delay for m in b_got)
    # subject
    # (the join's own, empty, subject may come after the join under load: wait for this one)
    topic = await signal(b_room.on_topic_changed, "the new subject",
                         lambda member, subject, **_: bool(subject) and subject.any() == "Tea time")
    await a_room.set_topic({None: "Tea time"})
    (_, subject), _ = await topic
    out["subject"] = [subject.any(), b_room.muc_subject.any(), b_room.muc_subject_setter]
    # nick change: the others see it
    renamed = await signal(a_room.on_nick_changed, "bob's new nick")
    await b_room.set_nick("bobby")
    (_, old, new), _ = await renamed
    out["nick"] = [old, new, b_room.me.nick]
    # a private message through the room, and its answer
    b_box, a_box = Inbox(bob), Inbox(alice)
    pm = aioxmpp.Message(type_=aioxmpp.MessageType.CHAT, to=room.replace(resource="bobby"))
    pm.body[None] = "psst"
    alice.enqueue(pm)
    got = await b_box.wait(lambda m: body_of(m) == "psst", "the private message")
    reply = aioxmpp.Message(type_=aioxmpp.MessageType.CHAT, to=got.from_)
    reply.body[None] = "what?"
    bob.enqueue(reply)
    back = await a_box.wait(lambda m: body_of(m) == "what?", "the private answer")
    out["private"] = [str(got.from_), str(back.from_)]
    # voice: a moderated room makes bobby a visitor; alice gives him voice
    muted = await signal(b_room.on_muc_role_changed, "bobby made a visitor",
                         lambda presence, occupant, **_: occupant.nick == "bobby" and occupant.role == "visitor")
    await configure(alice, room, moderatedroom=True)
    await muted
    # bobby asks for voice (XEP-0045 §7.13), alice's client approves the form it gets
    def approve(request, fut):             # aioxmpp hands over the parsed VoiceRequestForm
        out["voice_request"] = [request.roomnick.value, request.role.value]
        request.request_allow.value = True
        fut.set_result(request.render_reply())
    a_room.on_muc_role_request.connect(approve)
    voiced = await signal(b_room.on_muc_role_changed, "bobby voiced on request",
                          lambda presence, occupant, **_: occupant.nick == "bobby" and occupant.role == "participant")
    await b_room.muc_request_voice()
    await voiced
    # and the moderator's own role changes: voice off, and on again
    for role in ("visitor", "participant"):
        changed = await signal(b_room.on_muc_role_changed, f"bobby made a {role}",
                               lambda presence, occupant, role=role, **_: occupant.nick == "bobby"
                               and occupant.role == role)
        await a_room.muc_set_role("bobby", role, reason="because")
        await changed
    out["voice"] = b_room.me.role
    # moderation: alice retracts bobby's message for everyone (XEP-0425)
    bob.enqueue(groupchat(room, "regrettable"))
    await until(lambda: any(body_of(m) == "regrettable" for m in a_got), "bobby's message at alice")
    said = next(m for m in a_got if body_of(m) == "regrettable")
    sid = next(s.id_ for s in said.xep0359_stanza_ids if s.by == room)
    mod = Moderate()
    mod.id_, mod.retract, mod.reason = sid, Retract(), "no"
    await alice.send(aioxmpp.IQ(type_=aioxmpp.IQType.SET, to=room, payload=mod))
    retracted = await b_box.wait(lambda m: m.relay_retract is not None and m.relay_retract.id_ == sid,
                                 "the retraction")
    out["retracted_from"] = str(retracted.from_)
    # kick: bobby is out (307) and may come back
    exited = await signal(b_room.on_exit, "bobby kicked")
    await a_room.kick(member(a_room, "bobby"), "out")
    _, kw = await exited
    out["kick"] = [kw["muc_leave_mode"].name, sorted(kw["muc_status_codes"])]
    b_room, _ = await join(bob, room, "bobby")
    # ban: 301, and no way back until the ban is lifted
    exited = await signal(b_room.on_exit, "bobby banned")
    await a_room.ban(member(a_room, "bobby"), "gone")
    _, kw = await exited
    out["ban"] = [kw["muc_leave_mode"].name, sorted(kw["muc_status_codes"])]
    out["banned_join"] = await join_error(bob, room, "bobby")
    await a_room.muc_set_affiliation(jid("bob@localhost"), "none")
    # members-only and password
    await configure(alice, room, membersonly=True, passwordprotectedroom=True, roomsecret="sesame")
    out["stranger_join"] = await join_error(erin, room, "erin")
    await a_room.muc_set_affiliation(jid("erin@localhost"), "member")
    out["member_without_password"] = await join_error(erin, room, "erin")
    e_room, _ = await join(erin, room, "erin", password="sesame")
    out["member_join"] = e_room.me.affiliation
    members = await alice.summon(aioxmpp.MUCClient).get_affiliated(room, "member")
    out["members"] = sorted(str(j) for j in members)
    left = await signal(a_room.on_leave, "erin leaving", lambda occupant, **_: occupant.nick == "erin")
    await e_room.leave()
    (occupant,), _ = await left
    out["left"] = [occupant.nick, len(a_room.members)]
    # invitations, mediated and direct
    invites, e_box = [], Inbox(erin, early=True)
    erin.summon(aioxmpp.MUCClient).on_muc_invitation.connect(
        lambda stanza, muc_address, inviter, mode, **kw: invites.append([str(muc_address), mode.name,
                                                                         str(inviter.bare())]))
    for mode in (aioxmpp.im.InviteMode.MEDIATED, aioxmpp.im.InviteMode.DIRECT):
        await a_room.invite(jid("erin@localhost"), "come", mode=mode)
    await until(lambda: len(invites) == 2, "two invitations")
    out["invites"] = sorted(invites)
    # the room's password is in the mediated one, beside <invite/> as XEP-0045 §7.8.2 has it (aioxmpp
    # looks for it inside <invite/>, so its signal says None)
    mediated = await e_box.wait(lambda m: m.xep0045_muc_user is not None and m.xep0045_muc_user.invites, "it")
    out["mediated_password"] = mediated.xep0045_muc_user.password
    return out
