"""Roles, affiliations and the room configuration as channel statuses and modes (a MucService mixin).

    role moderator   = @ (+o)          affiliation owner/admin = stored by account (+o on join)
    role participant = +v, or no +m    affiliation member      = +I $a:account (+i rooms let them in)
    role visitor     = neither, +m     affiliation outcast     = +b $a:account (every protocol)
    role none        = KICK

The configuration form (XEP-0004) is the channel's modes: password +k, max users +l, moderated +m,
members-only +i, hidden (not public) +s, subject changeable by occupants = -t. The rest is the muc
store's, the same on every server (MUC_ROOM, newest stamp wins, a burst at link up): persistent (the
room's configuration and affiliations outlive its last member and restarts), name, description and
the history a join gets when it asks for no limit.
"""

from __future__ import annotations

from lxml import etree

from ..jid import JidError, parse_jid
from ..stanza import element
from .stanzas import MUC_ADMIN, MUC_OWNER, q

DATA = "jabber:x:data"
ROOMCONFIG = "http://jabber.org/protocol/muc#roomconfig"
REQUEST = "http://jabber.org/protocol/muc#request"
RANK = {"none": 0, "member": 1, "admin": 2, "owner": 3}
ROOM_FRAME = "MUC_ROOM"          # {room, config}: a room's configuration, stamped (store.py)
# form field -> configuration key, for the values that are not channel modes
TEXT_FIELDS = {"muc#roomconfig_roomname": "title", "muc#roomconfig_roomdesc": "description"}
HISTORY_FIELD = "muc#maxhistoryfetch"
MAX_TEXT = 400
# form field -> (mode letter, True when the field set means the mode is on)
FLAG_FIELDS = {"muc#roomconfig_membersonly": ("i", True), "muc#roomconfig_moderatedroom": ("m", True),
               "muc#roomconfig_publicroom": ("s", False), "muc#roomconfig_changesubject": ("t", False)}


def _true(v: str | None) -> bool:
    return (v or "").strip() in ("1", "true")


class Moderation:
    # ---------------------------------------------------------------- helpers
    def result(self, s, iq, payload=None) -> None:
        reply = element("iq", {"type": "result", "id": iq.get("id"), "from": iq.get("to"), "to": str(s.jid)})
        if payload is not None:
            reply.append(payload)
        s.send(reply)

    def account_of_jid(self, text: str | None) -> str | None:
        """The network account a JID names: `account@<xmpp domain>` (every protocol shares accounts)."""
        try:
            j = parse_jid(text or "")
        except JidError:
            return None
        return j.local if j.domain == self.xmpp.domain and j.local else None

    def may_configure(self, ev) -> bool:
        ch = self.net.find_channel(ev.channel)
        return self.affiliation(ch, ev.user) in ("owner", "admin")

    def modes(self, ch, changes, now, by=None) -> None:
        self.net.apply_modes(by or self.net_source(ch), ch, changes, now)

    def net_source(self, ch):
        return self.core.config.server.name

    # ---------------------------------------------------------------- muc#admin
    def admin_item(self, ev, item) -> tuple | None:
        """One `<item/>` of an admin set; an error tuple (type, condition, text) if refused."""
        ch = self.net.find_channel(ev.channel)
        me = ev.user
        mine = self.affiliation(ch, me)
        reason = item.findtext(q(MUC_ADMIN, "reason")) or ""
        role, aff = item.get("role"), item.get("affiliation")
        if role is not None:
            target = self.net.find_nick(item.get("nick") or "")
            if target is None or target not in ch.members:
                return ("cancel", "item-not-found", "no one by that nick is in the room")
            if "o" not in ch.members.get(me, ""):
                return ("auth", "forbidden", "only moderators (@) change roles")
            if RANK.get(self.affiliation(ch, target), 0) > RANK.get(mine, 0):
                return ("cancel", "not-allowed", "that occupant's affiliation is above yours")
            st = ch.members[target]
            if role == "none":
                self.net.kick(me, ch, target, reason, ev.now)
            elif role == "moderator":
                self.modes(ch, [("+", "o", target)], ev.now, me)
            elif role == "participant":
                changes = [("-", "o", target)] if "o" in st else []
                if "m" in ch.modes and "v" not in st:
                    changes.append(("+", "v", target))
                self.modes(ch, changes, ev.now, me)
            elif role == "visitor":
                self.modes(ch, [(sign, m, target) for sign, m in (("-", "o"), ("-", "v")) if m in st], ev.now, me)
            else:
                return ("modify", "bad-request", f"no role {role!r}")
            return None
        if aff is not None:
            account = self.account_of_jid(item.get("jid"))
            if account is None:
                return ("modify", "jid-malformed", f"affiliations are by account: user@{self.xmpp.domain}")
            if aff not in ("owner", "admin", "member", "none", "outcast"):
                return ("modify", "bad-request", f"no affiliation {aff!r}")
            old = self.stored_affiliation(ch, account)
            need = "owner" if "owner" in (aff, old) or "admin" in (aff, old) else "admin"
            if RANK.get(mine, 0) < RANK[need]:
                return ("auth", "forbidden", f"only an {need} may do that")
            if aff in ("owner", "none") and old == "owner" and self.store.with_affiliation(ch.key_name, "owner", ch.ts) \
                    == [account]:
                return ("cancel", "conflict", "a room keeps at least one owner")
            self.set_affiliation(ch, account, aff, me, reason, ev.now)
            return None
        return ("modify", "bad-request", "an item needs a role or an affiliation")

    def account_entry(self, ch, mode: str, account: str):
        """The `$a:account` entry of the channel's list `mode` (b: outcasts, I: members), or None."""
        mask = self.net.fold("$a:" + account)
        return next((b for b in ch.lists[mode] if self.net.fold(b.mask) == mask), None)

    def stored_affiliation(self, ch, account: str) -> str:
        if self.account_entry(ch, "b", account) is not None:
            return "outcast"
        a = self.store.affiliation(ch.key_name, account, ch.ts)
        if a:
            return a
        if self.account_entry(ch, "I", account) is not None:
            return "member"
        return "none"

    def set_affiliation(self, ch, account: str, aff: str, by, reason: str, now: float) -> None:
        mask = "$a:" + account
        changes = []
        has_b = self.account_entry(ch, "b", account) is not None
        has_i = self.account_entry(ch, "I", account) is not None
        if aff == "outcast" and not has_b:
            changes.append(("+", "b", mask))
        if aff != "outcast" and has_b:
            changes.append(("-", "b", mask))
        if aff in ("member", "admin", "owner") and not has_i:
            changes.append(("+", "I", mask))
        if aff in ("none", "outcast") and has_i:
            changes.append(("-", "I", mask))
        self.grant(ch, account, aff if aff in ("owner", "admin", "member") else None, now)
        if changes:
            self.modes(ch, changes, now, by)
        for u in [u for u in ch.members if u.account == account]:
            st = ch.members.get(u, "")
            if aff == "outcast":
                self.net.kick(by, ch, u, reason or "banned", now)
            elif aff in ("owner", "admin") and "o" not in st:
                self.modes(ch, [("+", "o", u)], now)
            elif aff in ("member", "none") and "o" in st:
                self.modes(ch, [("-", "o", u)], now)

    def admin_list(self, ev, role: str | None, aff: str | None):
        ch = self.net.find_channel(ev.channel)
        if RANK.get(self.affiliation(ch, ev.user), 0) < RANK["admin"] and "o" not in ch.members.get(ev.user, ""):
            return ("auth", "forbidden", "only moderators see these lists")
        out = etree.Element(q(MUC_ADMIN, "query"), nsmap={None: MUC_ADMIN})
        dom = self.xmpp.domain
        if role is not None:
            for u in ch.members:
                if self.role(ch, u) == role:
                    etree.SubElement(out, q(MUC_ADMIN, "item"), nick=u.nick, role=role,
                                     affiliation=self.affiliation(ch, u), jid=self.real_jid(u))
            return out
        if aff == "outcast":
            accounts = sorted(b.mask[3:] for b in ch.lists["b"] if b.mask.startswith("$a:"))
        elif aff == "member":
            accounts = sorted({b.mask[3:] for b in ch.lists["I"] if b.mask.startswith("$a:")}
                              | set(self.store.with_affiliation(ch.key_name, "member", ch.ts))
                              - set(self.store.with_affiliation(ch.key_name, "admin", ch.ts))
                              - set(self.store.with_affiliation(ch.key_name, "owner", ch.ts)))
        elif aff in ("owner", "admin"):
            accounts = self.store.with_affiliation(ch.key_name, aff, ch.ts)
        else:
            return ("modify", "bad-request", f"no list of affiliation {aff!r}")
        for a in accounts:
            etree.SubElement(out, q(MUC_ADMIN, "item"), affiliation=aff, jid=f"{a}@{dom}")
        return out

    # ---------------------------------------------------------------- muc#owner: the form
    def config_form(self, name: str) -> etree._Element:
        ch = self.net.find_channel(name)
        query = etree.Element(q(MUC_OWNER, "query"), nsmap={None: MUC_OWNER})
        x = etree.SubElement(query, q(DATA, "x"), nsmap={None: DATA}, type="form")
        etree.SubElement(x, q(DATA, "title")).text = f"Configuration of {ch.name}"

        def field(var, typ, value, label, options=()):
            f = etree.SubElement(x, q(DATA, "field"), var=var, type=typ, label=label)
            etree.SubElement(f, q(DATA, "value")).text = value
            for opt in options:
                etree.SubElement(etree.SubElement(f, q(DATA, "option"), label=opt), q(DATA, "value")).text = opt
        field("FORM_TYPE", "hidden", ROOMCONFIG, "")
        config = self.store.rooms.get(ch.key_name) or {}
        field("muc#roomconfig_persistentroom", "boolean", "1" if self.store.persistent(ch.key_name) else "0",
              "Persistent (kept when empty and across restarts)")
        field("muc#roomconfig_roomname", "text-single", config.get("title") or "", "Name")
        field("muc#roomconfig_roomdesc", "text-single", config.get("description") or "", "Description")
        history = config.get("history")
        field(HISTORY_FIELD, "text-single", str(self.opts.history_default if history is None else history),
              "Messages of history a join gets by default")
        for var, (mode, on) in FLAG_FIELDS.items():
            field(var, "boolean", "1" if (mode in ch.modes) == on else "0", f"mode +{mode}" if on else f"not +{mode}")
        field("muc#roomconfig_passwordprotectedroom", "boolean", "1" if ch.key else "0", "Password (+k)")
        field("muc#roomconfig_roomsecret", "text-private", ch.key or "", "Password")
        # list-single as XEP-0045's registry has it (clients such as aioxmpp check the type); any number
        # is taken back, the current limit is offered with the usual ones
        limit = str(ch.limit) if ch.limit else "none"
        field("muc#roomconfig_maxusers", "list-single", limit, "Maximum occupants (+l)",
              sorted({"10", "20", "30", "50", "100", limit} - {"none"}, key=int) + ["none"])
        field("muc#roomconfig_whois", "list-single", "anyone", "Real JIDs are shown to", ["anyone"])
        return query

    def configure(self, ev) -> tuple | None:
        query = ev.el[0]
        if query.find(q(MUC_OWNER, "destroy")) is not None:
            return ("cancel", "not-allowed", "a room is a channel: it ends when its last member leaves")
        x = query.find(q(DATA, "x"))
        if x is None or x.get("type") == "cancel":
            return None
        if x.get("type") != "submit":
            return ("modify", "bad-request", "submit the form")
        values = {}
        for f in x.findall(q(DATA, "field")):
            values[f.get("var")] = [v.text or "" for v in f.findall(q(DATA, "value"))]
        ch = self.net.find_channel(ev.channel)
        changes = []
        for var, (mode, on) in FLAG_FIELDS.items():
            if var in values:
                want = _true((values[var] or [""])[0]) == on
                if want != (mode in ch.modes):
                    changes.append(("+" if want else "-", mode, None))
        secret = (values.get("muc#roomconfig_roomsecret") or [None])[0]
        protect = values.get("muc#roomconfig_passwordprotectedroom")
        if protect is not None and not _true(protect[0]) and ch.key:
            changes.append(("-", "k", None))
        elif secret and secret != ch.key and (protect is None or _true(protect[0])):
            if " " in secret or "," in secret:
                return ("modify", "not-acceptable", "an IRC channel key has no spaces or commas")
            changes.append(("+", "k", secret))
        if "muc#roomconfig_maxusers" in values:
            raw = (values["muc#roomconfig_maxusers"] or ["0"])[0].strip() or "0"
            raw = "0" if raw == "none" else raw
            if not raw.isdigit():
                return ("modify", "not-acceptable", "maximum occupants is a number")
            n = int(raw)
            if n and n != ch.limit:
                changes.append(("+", "l", str(n)))
            elif not n and ch.limit:
                changes.append(("-", "l", None))
        old = self.store.rooms.get(ch.key_name) or {}
        extra = {k: old[k] for k in ("title", "description", "history") if k in old}
        for var, k in TEXT_FIELDS.items():
            if var in values:
                extra[k] = " ".join(values[var])[:MAX_TEXT]
        if HISTORY_FIELD in values:
            raw = (values[HISTORY_FIELD] or [""])[0].strip()
            if raw and not raw.isdigit():
                return ("modify", "not-acceptable", "the history length is a number")
            extra["history"] = min(int(raw), self.opts.history_length) if raw else None
        if changes:
            self.modes(ch, changes, ev.now, ev.user)
        persistent = self.store.persistent(ch.key_name)
        if "muc#roomconfig_persistentroom" in values:
            persistent = _true((values["muc#roomconfig_persistentroom"] or [""])[0])
        if persistent or old or any(extra.values()):
            self.save_room(ch, persistent, extra, ev.now)
        return None

    def save_room(self, ch, persistent: bool, extra: dict, now: float) -> None:
        """Store the room's configuration, stamped now, and tell every server (MUC_ROOM)."""
        config = {"persistent": persistent, "stamp": [now, self.net.me.id], "name": ch.name,
                  "modes": "".join(sorted(ch.modes)), "key": ch.key, "limit": ch.limit, "topic": ch.topic,
                  "topic_by": ch.topic_by, **extra}
        self.store.save_room(ch.key_name, config)
        router = self.net.router
        if router is not None:
            router.send_extension(ROOM_FRAME, {"room": ch.key_name, "config": config})

    def room_frame(self, payload) -> None:
        """MUC_ROOM from another server: its configuration of a room, if newer than ours."""
        room = payload.get("room") if isinstance(payload, dict) else None
        config = payload.get("config") if isinstance(payload, dict) else None
        if not isinstance(room, str) or not isinstance(config, dict) or not isinstance(config.get("persistent"), bool):
            return
        if any(not isinstance(config.get(k, ""), str) for k in ("name", "modes", "title", "description", "topic")):
            return
        if room != self.net.fold(config.get("name") or room):
            return                                   # a configuration names its own room
        self.store.merge_room(room, config)

    def room_burst(self) -> None:
        """At link up: every room configuration this server holds (the newest wins on each side)."""
        router = self.net.router
        for room, config in list(self.store.rooms.items()):
            router.send_extension(ROOM_FRAME, {"room": room, "config": config})

    def restore_room(self, ch, user, now: float) -> bool:
        """A persistent room's channel was made again: its modes and subject come back."""
        config = self.store.rooms.get(ch.key_name)
        if config is None or not self.store.persistent(ch.key_name):
            return False
        changes = [("+", m, None) for m in config.get("modes", "") if m not in ch.modes]
        changes += [("-", m, None) for m in list(ch.modes) if m not in config.get("modes", "")]
        if config.get("key"):
            changes.append(("+", "k", config["key"]))
        if config.get("limit"):
            changes.append(("+", "l", str(config["limit"])))
        if changes:
            self.modes(ch, changes, now)
        if config.get("topic"):
            self.net.set_topic(config.get("topic_by") or self.net_source(ch), ch, config["topic"], now)
        return True

    # ---------------------------------------------------------------- voice requests (XEP-0045 §7.13)
    def room_form(self, ev) -> None:
        """A muc#request form from a visitor: it goes to the room's local XMPP moderators."""
        x = ev.el.find(q(DATA, "x"))
        if x is None:
            return
        form_type = next((f.findtext(q(DATA, "value")) for f in x.findall(q(DATA, "field"))
                          if f.get("var") == "FORM_TYPE"), None)
        if form_type != REQUEST:
            return
        ch = self.net.find_channel(ev.channel)
        if x.get("type") == "submit" and "o" in ch.members.get(ev.user, ""):
            self.approve_voice(ev, x)            # a moderator's answer
            return
        room = self.room(ch)
        req = element("message", {"from": room.jid})
        form = etree.SubElement(req, q(DATA, "x"), nsmap={None: DATA}, type="form")
        etree.SubElement(form, q(DATA, "title")).text = "Voice request"
        for var, typ, value in (("FORM_TYPE", "hidden", REQUEST), ("muc#role", "list-single", "participant"),
                                ("muc#jid", "jid-single", self.real_jid(ev.user)),
                                ("muc#roomnick", "text-single", ev.user.nick),
                                ("muc#request_allow", "boolean", "0")):
            f = etree.SubElement(form, q(DATA, "field"), var=var, type=typ)
            etree.SubElement(f, q(DATA, "value")).text = value
        for u, st in ch.members.items():
            if "o" in st and u.session is not None:
                for s in list(room.occupants.get(getattr(u.session, "bare", None), {}).values()):
                    self.send(s, etree.fromstring(etree.tostring(req)))

    def approve_voice(self, ev, x) -> None:
        """A moderator's answer to a voice request: muc#request_allow true gives +v to muc#roomnick."""
        fields = {f.get("var"): f.findtext(q(DATA, "value")) for f in x.findall(q(DATA, "field"))}
        if not _true(fields.get("muc#request_allow")):
            return
        ch = self.net.find_channel(ev.channel)
        target = self.net.find_nick(fields.get("muc#roomnick") or "")
        if target is not None and target in ch.members and "v" not in ch.members[target]:
            self.modes(ch, [("+", "v", target)], ev.now)
