"""The XMPP service of one server: accounts online here, their network members, the roster store.

Each account with a bound resource is one network member (`AccountMember`, nick from the
localpart, attrs `{"jid": full, "resource": r, "resources": {r: priority or None}}`: its first
resource, and the map of its resources here that federation.py routes by). Every other network
user is `nick@domain` to XMPP.
"""

from __future__ import annotations

import re
import secrets

from relay.core.members import BridgedMembers
from relay.core.model import User

from .jid import Jid, JidError, prep_localpart
from .roster import RosterStore
from .session import AccountMember, C2sSession
from .stream import Limits

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: str) -> str:
    """`text` without the characters XML 1.0 cannot carry (IRC colour and bold codes)."""
    return _NOT_XML.sub("", text)


class XmppService:
    def __init__(self, core, opts, roster: RosterStore):
        self.core, self.opts, self.net = core, opts, core.net
        self.domain = opts.domain
        self.limits = Limits(max_stanza_bytes=opts.max_stanza_bytes,
                             max_stanza_bytes_preauth=opts.max_stanza_bytes_preauth, max_depth=opts.max_depth)
        self.members = BridgedMembers(core.net, "xmpp", core.config)
        self.roster = roster
        self.accounts: dict[Jid, AccountMember] = {}   # bare JID -> the account's member (bound here)
        self.router = None                              # routing.Router, set by the module
        self.pending: set = set()                       # connected, not yet bound (or handshaken)
        self.components: dict[str, object] = {}         # domain -> component.ComponentSession
        self._local_of: dict[str, str] = {}              # nick -> its JID localpart ("" if it has none)
        self.federation = None                          # federation.XmppFederation, set by the module
        self.component_domains = None                   # component_net.ComponentDomains, set by the module
        self.channel_events = None                      # renders channel events for every account (MUC)

    def new_session(self, transport, listener, now: float) -> C2sSession:
        return C2sSession(self, transport, listener, now)

    def new_component(self, transport, listener, now: float):
        from .component import ComponentSession
        return ComponentSession(self, transport, listener, now)

    # ---------------------------------------------------------------- binding
    def free_resource(self, full: Jid) -> Jid:
        """`full`, unless that resource is bound here or on another server: then another one."""
        acct = self.accounts.get(full.bare)
        if (acct is None or full.resource not in acct.resources) and self.federation.server_of(full) is None:
            return full
        return full.with_resource(f"{full.resource}-{secrets.token_hex(3)}")

    def bound(self, s: C2sSession, now: float) -> None:
        bare = s.jid.bare
        acct = self.accounts.get(bare)
        if acct is None:
            acct = self.accounts[bare] = AccountMember(self, bare)
        acct.resources[s.jid.resource] = s
        s.member = acct
        self.pending.discard(s)
        if acct.user is None:
            acct.user = self.members.introduce(acct, s.account, now, account=s.account, ip=s.t.peer_host,
                                               realname=str(bare), ident=s.account,
                                               attrs=self.federation.attrs_of(acct))
        else:
            self.federation.announce(acct, now)

    def unbound(self, s: C2sSession, reason: str, now: float) -> None:
        acct = self.accounts.get(s.jid.bare)
        if acct is None or acct.resources.get(s.jid.resource) is not s:
            return
        if s.interested or s.presence is not None:
            self.router.went_offline(s, now)
        self.core.hooks.run("xmpp_resource_unbound", s, now)   # services drop what the resource had
        del acct.resources[s.jid.resource]
        if not acct.resources:
            del self.accounts[s.jid.bare]
            self.members.quit(acct.user, reason or "Connection closed", now)
            acct.user = None
        else:
            self.federation.announce(acct, now)

    # ---------------------------------------------------------------- names
    def jid_of(self, u: User) -> str:
        """The bare JID a network user has for XMPP: its own (XMPP users), else nick@domain."""
        full = u.attrs.get("xmpp", {}).get("jid")
        if full:
            return full.split("/", 1)[0]
        return self.jid_of_nick(u.nick, u.uid)

    def jid_of_nick(self, nick: str, uid: str) -> str:
        """nick@domain, the bare JID of a user of another protocol (its uid where the nick has none)."""
        local = self._local_of.get(nick)
        if local is None:
            try:
                local = prep_localpart(nick)       # PRECIS is slow: once per nick, not per message
            except JidError:
                local = ""
            if len(self._local_of) > 50_000:
                self._local_of.clear()
            self._local_of[nick] = local
        return f"{local or uid.lower()}@{self.domain}"

    def network_user(self, bare: Jid) -> User | None:
        """The network user `bare` names (an XMPP account here first, then any user by nick)."""
        acct = self.accounts.get(bare)
        if acct is not None:
            return acct.user
        if bare.domain != self.domain or bare.local is None:
            return None
        u = self.net.find_nick(bare.local)
        if u is not None and u.proto == "xmpp" and self.jid_of(u) != str(bare):
            return None     # that nick is another XMPP account's
        return u

    def stats(self) -> dict:
        return {"accounts": len(self.accounts),
                "sessions": sum(len(a.resources) for a in self.accounts.values()),
                "remote_accounts": len(self.federation.remote), **self.federation.stats,
                "components": sorted(self.components),
                "remote_components": self.component_domains.remote_domains(),
                **self.component_domains.stats}
