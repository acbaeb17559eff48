"""IQs to occupants (XEP-0045 §17.3): an iq get/set to room@service/nick goes to one of that
occupant's real full JIDs, from the asker's room JID, and the answer comes back from the target's
room JID; neither side learns the other's real JID from it. Across the tree too:

    MUC_IQ {kind: "ask", room, id, from_nick, to (uid), xml}    -> the target's server
    MUC_IQ {kind: "answer", id, xml}                              <- the asker's server

`id` is the relay's own (the target answers to it); the asker gets its own id back. What is
outstanding is bounded (oldest dropped: the client's own timeout answers for those).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict

from lxml import etree

from ..stanza import element

IQ_FRAME = "MUC_IQ"
KEPT = 4096
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, remove_pis=True,
                          remove_comments=True, huge_tree=False)
CLIENT_IQ = "{jabber:client}iq"


class IqRelay:
    def __init__(self, muc):
        self.muc = muc
        self.asked: OrderedDict = OrderedDict()       # relay id -> (asker session, its id, room jid, target nick)
        self.delivered: OrderedDict = OrderedDict()   # relay id -> (asker's server id, target bare JID, room jid)
        self._ids = itertools.count(1)

    @staticmethod
    def _keep(d: OrderedDict, key, value) -> None:
        d[key] = value
        if len(d) > KEPT:
            d.popitem(last=False)

    # ---------------------------------------------------------------- the asker's side
    def ask(self, ev) -> None:
        """An iq get/set from an occupant to room/nick."""
        muc, net = self.muc, self.muc.net
        ch = net.find_channel(ev.channel)
        target = net.find_nick(ev.to.resource)
        if target is None or target not in ch.members:
            ev.error("cancel", "item-not-found", "no one by that nick is in the room")
            return
        if target.proto != "xmpp":
            ev.error("cancel", "service-unavailable", f"{target.nick} is not on XMPP")
            return
        room = muc.room(ch)
        rid = f"muc-iq-{net.me.id}-{next(self._ids)}"
        self._keep(self.asked, rid, (ev.s, ev.el.get("id"), room.jid, target.nick))
        me = ev.user.nick
        if target.session is not None:
            if not self.deliver(room.key, rid, me, target, ev.el, net.me.id):
                self.asked.pop(rid, None)
                ev.error("cancel", "service-unavailable", f"{target.nick} has no resource in the room")
            return
        router = net.router
        if router is None:
            self.asked.pop(rid, None)
            ev.error("cancel", "service-unavailable")
            return
        router.send_extension(IQ_FRAME, {"kind": "ask", "room": room.key, "id": rid, "from_nick": me,
                                         "to": target.uid, "xml": etree.tostring(ev.el, encoding="unicode")},
                              servers={target.server})

    def answered(self, rid: str, el: etree._Element) -> None:
        """The target's answer reached the asker's server: to the asker, with its own id."""
        got = self.asked.pop(rid, None)
        if got is None:
            return
        s, orig_id, room_jid, target_nick = got
        if getattr(s, "jid", None) is None or s.member is None:
            return                                       # the asker is gone
        reply = element("iq", {"type": el.get("type"), "id": orig_id, "from": f"{room_jid}/{target_nick}",
                               "to": str(s.jid)})
        for child in el:
            reply.append(child)
        s.send(reply)

    # ---------------------------------------------------------------- the target's side
    def deliver(self, key: str, rid: str, from_nick: str, target, el: etree._Element, origin: str) -> bool:
        """The iq to one of the target's sessions in the room, from the asker's room JID."""
        room = self.muc.rooms.get(key)
        bare = getattr(target.session, "bare", None)
        sessions = room.occupants.get(bare) if room is not None and bare is not None else None
        if not sessions:
            return False
        s = next(iter(sessions.values()))
        out = element("iq", {"type": el.get("type"), "id": rid, "from": f"{room.jid}/{from_nick}", "to": str(s.jid)})
        for child in el:
            out.append(child)
        self._keep(self.delivered, rid, (origin, s.jid.bare, room.jid))
        s.send(out)
        return True

    def answer(self, ev) -> bool:
        """An iq result/error from an occupant to room/nick: the answer to a relayed iq, if it is one."""
        rid = ev.el.get("id") or ""
        got = self.delivered.get(rid)
        if got is None or got[1] != ev.s.jid.bare or got[2] != str(ev.to.bare):
            return False
        del self.delivered[rid]
        origin = got[0]
        net = self.muc.net
        if origin == net.me.id:
            self.answered(rid, ev.el)
        elif net.router is not None:
            net.router.send_extension(IQ_FRAME, {"kind": "answer", "id": rid,
                                                 "xml": etree.tostring(ev.el, encoding="unicode")},
                                      servers={origin})
        return True

    # ---------------------------------------------------------------- frames
    def frame(self, origin: str, p) -> None:
        if not isinstance(p, dict) or not isinstance(p.get("id"), str) or not isinstance(p.get("xml"), str):
            return
        try:
            el = etree.fromstring(p["xml"].encode("utf-8"), _PARSER)
        except (etree.XMLSyntaxError, ValueError):
            return
        if el.tag != CLIENT_IQ or el.getroottree().docinfo.doctype:
            return
        if p.get("kind") == "answer" and el.get("type") in ("result", "error"):
            self.answered(p["id"], el)
        elif p.get("kind") == "ask" and el.get("type") in ("get", "set") and isinstance(p.get("room"), str) \
                and isinstance(p.get("from_nick"), str) and isinstance(p.get("to"), str):
            target = self.muc.net.users.get(p["to"])
            if target is None or target.session is None or \
                    not self.deliver(p["room"], p["id"], p["from_nick"], target, el, origin):
                err = element("iq", {"type": "error", "id": p["id"]})
                e = etree.SubElement(err, "{jabber:client}error", type="cancel")
                etree.SubElement(e, "{urn:ietf:params:xml:ns:xmpp-stanzas}service-unavailable")
                self.muc.net.router.send_extension(IQ_FRAME, {"kind": "answer", "id": p["id"],
                                                              "xml": etree.tostring(err, encoding="unicode")},
                                                   servers={origin})
