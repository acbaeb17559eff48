"""SIP onto the network: a registered user is a member (through BridgedMembers), direct messages to it
leave as MESSAGE requests to each of its contacts, and MESSAGE from SIP to a network nick is a direct
message in whatever protocol that user speaks.

A member exists while its AOR has a binding: introduced at the first, quit when the last expires or is
removed. Its attrs (`user.attrs["sip"]`) are `{"aor": ..., "contact": ...}` (WHOIS says SIP).
"""

from __future__ import annotations

from relay.core.members import BridgedMembers
from relay.core.model import Channel, MemberKicked, MessageSent, User


class SipSession:
    """The MemberSession of a registered SIP user: the network tells it events."""

    proto = "sip"
    t = None   # no one connection: WHOIS asks the session's transport whether it is TLS

    def __init__(self, mapping: "SipMembers", aor: str):
        self.mapping = mapping
        self.aor = aor
        self.user: User | None = None

    def direct_refusal(self) -> None:
        """Direct messages always reach this member (MemberSession)."""
        return None

    def deliver(self, ev) -> None:
        t = type(ev)
        if t is MessageSent:
            if ev.target is self.user:
                self.mapping.service.send_direct(self.aor, ev)
            elif type(ev.target) is Channel and ev.source is not self.user:
                self.mapping.service.conferences.send_message(self.aor, ev)
        elif t is MemberKicked and ev.user is self.user:
            self.mapping.service.conferences.left(self.aor, ev.channel.name, ev.time)  # the dialog ends: BYE

    def server_closing(self, reason: str, now: float) -> None:
        pass  # bindings are kept (and saved): the client's registration outlives the restart


class SipMembers:
    def __init__(self, service, net, config):
        self.service = service
        self.net = net
        self.members = BridgedMembers(net, "sip", config)
        self.sessions: dict[str, SipSession] = {}

    def user_of(self, aor: str) -> User | None:
        s = self.sessions.get(aor)
        return s.user if s else None

    def update(self, aor: str, contacts: list[str], account: str | None, ip: str | None, now: float) -> None:
        """The bindings of `aor` (an account name) are now `contacts`: introduce, update or quit."""
        s = self.sessions.get(aor)
        if not contacts:
            if s is not None:
                del self.sessions[aor]
                self.members.quit(s.user, "Registration ended", now)
            return
        attrs = {"aor": f"sip:{account or aor}@{self.service.domain}", "contact": contacts[0]}
        if s is None:
            s = self.sessions[aor] = SipSession(self, aor)
            s.user = self.members.introduce(s, account or aor, now, account=account, ip=ip,
                                            realname=f"SIP {attrs['aor']}", ident=account or aor, attrs=attrs)
        elif s.user.attrs.get("sip") != attrs:
            self.net.set_attrs(s.user, "sip", attrs, now)

    def quit_all(self, reason: str, now: float) -> None:
        for s in list(self.sessions.values()):
            self.members.quit(s.user, reason, now)
        self.sessions.clear()
