"""IRC command handlers (RFC 1459/2812, Modern IRC, IRCv3). Each is headed by its syntax."""

from __future__ import annotations

import logging
import time as _time

from relay import __version__
from relay.core.passwords import verify_password as verify_oper_password
from relay.irc.client import CAPS, T_MSGTAGS, IrcClient
from relay.irc.table import CommandTable
from relay.core.model import MESSAGE, NOTICE, TAG_ONLY, Channel, User
from relay.core.network import JoinRefused
from relay.proto.irc import mask_match, normalize_mask, valid_channel, valid_nick

log = logging.getLogger("relay.irc")

IRC_COMMANDS = CommandTable()
command = IRC_COMMANDS.command

USERLEN = 10
CHANMODES_LIST, CHANMODES_KEY, CHANMODES_LIMIT, CHANMODES_FLAG = "beI", "k", "l", "imnst"
JOIN_ERRORS = {
    "banned": ("474", "Cannot join channel (+b)"), "invite_only": ("473", "Cannot join channel (+i)"),
    "bad_key": ("475", "Cannot join channel (+k)"), "full": ("471", "Cannot join channel (+l)"),
    "too_many": ("405", "You have joined too many channels"),
    "may_not_create": ("403", "You may not create channels"),
}
LIST_NUMERICS = {"b": ("367", "368", "End of channel ban list"),
                 "e": ("348", "349", "End of channel exception list"),
                 "I": ("346", "347", "End of channel invite list")}


def isupport(c: IrcClient) -> list[str]:
    net, irc = c.core.config.network, c.svc.opts
    return [
        f"AWAYLEN={net.awaylen}", f"CASEMAPPING={net.casemapping}", f"CHANLIMIT=#:{net.chanlimit}",
        f"CHANMODES={CHANMODES_LIST},{CHANMODES_KEY},{CHANMODES_LIMIT},{CHANMODES_FLAG}",
        f"CHANNELLEN={net.channellen}", "CHANTYPES=#", "EXCEPTS=e", "INVEX=I", f"KICKLEN={net.kicklen}",
        f"MAXLIST=b:{net.maxlist},e:{net.maxlist},I:{net.maxlist}", f"MODES={irc.modes_per_line}",
        f"NETWORK={c.core.config.server.network}",
        f"NICKLEN={net.nicklen}", "PREFIX=(ov)@+", f"TOPICLEN={net.topiclen}", f"USERLEN={USERLEN}",
        f"TARGMAX=PRIVMSG:{irc.maxtargets},NOTICE:{irc.maxtargets},TAGMSG:{irc.maxtargets},JOIN:,PART:,KICK:1,WHOIS:1",
        "UTF8ONLY",
    ]


def welcome(c: IrcClient, now: float) -> None:
    cfg = c.core.config
    u = c.user
    c.numeric("001", f"Welcome to the {cfg.server.network} Network, {u.prefix}")
    c.numeric("002", f"Your host is {cfg.server.name}, running version relaynet-{__version__}")
    created = _time.strftime("%Y-%m-%d %H:%M:%S UTC", _time.gmtime(c.core.started))
    c.numeric("003", f"This server was created {created}")
    c.numeric("004", cfg.server.name, f"relaynet-{__version__}", "iow", "beIiklmnostv", "beIklov")
    tokens = isupport(c)
    for i in range(0, len(tokens), 12):
        c.numeric("005", *tokens[i:i + 12], "are supported by this server")
    lusers(c, None, now)
    motd(c, None, now)


IRC_COMMANDS.welcome = welcome


def prefix_of(c: IrcClient, status: str) -> str:
    if not status:
        return ""
    if "multi-prefix" in c.caps:
        return ("@" if "o" in status else "") + ("+" if "v" in status else "")
    return "@" if "o" in status else "+"


def is_op(ch: Channel, u: User) -> bool:
    return "o" in ch.members.get(u, "")


def visible_channel(ch: Channel, u: User | None) -> bool:
    return "s" not in ch.modes or (u is not None and u in ch.members)


def split_targets(s: str) -> list[str]:
    return [t for t in s.split(",") if t]


def fit(text: str, *line: str) -> str:
    """Cut text (UTF-8 safe) so the relayed line `:<line...> :<text>\r\n` stays within 512 bytes (Modern)."""
    if len(text) * 4 + sum(map(len, line)) * 4 < 500:  # short enough whatever its encoding: the usual case
        return text
    room = 512 - len((":" + " ".join(line) + " :\r\n").encode())
    data = text.encode()
    return text if len(data) <= room else data[:max(room, 0)].decode("utf-8", "ignore")


# ---------------------------------------------------------------- registration

@command("CAP", min_params=1, registered=False, count_idle=False)
def cap(c: IrcClient, msg, now):
    """CAP LS [version] | LIST | REQ :caps | END"""
    sub = msg.params[0].upper()
    if sub == "LS":
        if not c.registered:
            c.cap_negotiating = True
        if len(msg.params) > 1 and msg.params[1].isdigit():
            c.cap_version = max(c.cap_version, int(msg.params[1]))
        if c.cap_version >= 302:
            c.set_caps({"cap-notify"}, set())
        caps = c.cap_list()
        # 302 clients accept multi-line LS; keep lines well under 512 bytes.
        lines, cur = [], []
        for cp in caps:
            if sum(len(x) + 1 for x in cur) + len(cp) > 380:
                lines.append(cur)
                cur = []
            cur.append(cp)
        lines.append(cur)
        for i, line in enumerate(lines):
            more = ["*"] if i < len(lines) - 1 and c.cap_version >= 302 else []
            c.reply("CAP", c.target, "LS", *more, " ".join(line))
    elif sub == "LIST":
        c.reply("CAP", c.target, "LIST", " ".join(sorted(c.caps)))
    elif sub == "REQ":
        if not c.registered:
            c.cap_negotiating = True
        wanted = msg.params[1].split() if len(msg.params) > 1 else []
        add, remove = set(), set()
        for w in wanted:
            name = w[1:] if w.startswith("-") else w
            if name not in CAPS:
                c.reply("CAP", c.target, "NAK", " ".join(wanted))
                return
            (remove if w.startswith("-") else add).add(name)
        c.set_caps(add, remove)
        c.reply("CAP", c.target, "ACK", " ".join(wanted))
    elif sub == "END":
        if not c.registered and c.cap_negotiating:
            c.cap_negotiating = False
            c.try_register(now)
    else:
        c.numeric("410", msg.params[0], "Invalid CAP command")


@command("AUTHENTICATE", min_params=1, registered=False)
def authenticate(c: IrcClient, msg, now):
    """AUTHENTICATE mechanism | base64 | + | *"""
    if "sasl" not in c.caps:
        c.numeric("904", "SASL authentication failed")
        return
    c.sasl_step(msg.params[0], now)  # also after registration (IRCv3 sasl-3.2); account-notify tells peers


@command("PASS", min_params=1, registered=False)
def pass_(c: IrcClient, msg, now):
    """PASS password"""
    if c.registered:
        c.numeric("462", "You may not reregister")
        return
    c.password = msg.params[0]


@command("NICK", registered=False)
def nick(c: IrcClient, msg, now):
    """NICK nickname"""
    if not msg.params or not msg.params[0]:
        c.numeric("431", "No nickname given")
        return
    new = msg.params[0]
    nicklen = c.core.config.network.nicklen
    if not valid_nick(new, nicklen):
        c.numeric("432", new, "Erroneous nickname")
        return
    net = c.net
    if c.user is None:
        if net.nick_in_use(new):
            c.numeric("433", new, "Nickname is already in use")
            return
        c.nick = new
        c.try_register(now)
        return
    if new == c.user.nick:
        return
    if net.nick_in_use(new, but=c.user):
        c.numeric("433", new, "Nickname is already in use")
        return
    c.nick = new
    net.change_nick(c.user, new, now)


@command("USER", min_params=4, registered=False)
def user(c: IrcClient, msg, now):
    """USER username 0 * :realname"""
    if c.registered or c.ident:
        c.numeric("462", "You may not reregister")
        return
    ident = "".join(ch for ch in msg.params[0] if ch.isalnum() or ch in "-_.[]{}\\`^|")[:USERLEN - 1]
    if not ident or not msg.params[3]:  # Modern: an empty username or realname is ERR_NEEDMOREPARAMS
        c.numeric("461", "USER", "Not enough parameters")
        return
    c.ident = "~" + ident
    c.realname = msg.params[3][:200]
    c.try_register(now)


@command("PING", min_params=1, registered=False, count_idle=False)
def ping(c: IrcClient, msg, now):
    """PING token"""
    c.reply("PONG", c.server_name, msg.params[0])


@command("PONG", registered=False, count_idle=False)
def pong(c: IrcClient, msg, now):
    """PONG [server] token"""
    c.ping_sent = None


@command("QUIT", registered=False)
def quit_(c: IrcClient, msg, now):
    """QUIT [:reason]"""
    reason = msg.params[0] if msg.params else ""
    if reason and c.user is not None:
        reason = fit(reason, c.user.prefix, "QUIT", "Quit:")
    c.quit_and_close("Quit: " + reason if reason else "Client Quit", now)


# A web client (or a scanner) that reached the IRC port: told so and closed before it registers.
HTTP_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "PRI"))


def not_registered(c: IrcClient, msg, now):
    """A command sent before registration that needs it: 451, or an HTTP request line (GET / HTTP/1.1)"""
    if msg.command not in HTTP_METHODS:
        c.numeric("451", "You have not registered")
        return
    target = msg.params[0][:100] if msg.params else ""
    log.info("IRC connection from %s refused: it sent an HTTP request (%s %r)", c.host, msg.command, target)
    c.quit_and_close("This is an IRC server, not a web server: connect with an IRC client", now)


IRC_COMMANDS.not_registered = not_registered


# ---------------------------------------------------------------- information

@command("LUSERS")
def lusers(c: IrcClient, msg, now):
    """LUSERS"""
    net = c.net
    k = net.counts()
    servers = len(net.server_names)
    c.numeric("251", f"There are {k['users'] - k['invisible']} users and {k['invisible']} invisible "
                     f"on {servers} servers")
    c.numeric("252", str(k["opers"]), "operator(s) online")
    unknown = len(c.svc.local) - c.svc.registered
    c.numeric("253", str(unknown), "unknown connection(s)")
    c.numeric("254", str(k["channels"]), "channels formed")
    c.numeric("255", f"I have {net.local_count} clients and {servers - 1} servers")
    c.numeric("265", str(net.local_count), str(net.max_local),
              f"Current local users {net.local_count}, max {net.max_local}")
    c.numeric("266", str(k["users"]), str(net.max_global), f"Current global users {k['users']}, max {net.max_global}")


def no_such_server(c: IrcClient, msg) -> bool:
    """For `CMD [server]` queries: 402 if the optional target is neither a known server (mask) nor a nick."""
    if msg is None or not msg.params:
        return False
    target = msg.params[0]
    if any(mask_match(target, name) for name in c.net.server_names.values()) or c.net.find_nick(target):
        return False
    c.numeric("402", target, "No such server")
    return True


@command("MOTD")
def motd(c: IrcClient, msg, now):
    """MOTD [server]"""
    if no_such_server(c, msg):
        return
    text = c.svc.opts.motd
    if not text:
        c.numeric("422", "MOTD File is missing")
        return
    c.numeric("375", f"- {c.server_name} Message of the day - ")
    for line in text.splitlines() or [""]:
        c.numeric("372", f"- {line}")
    c.numeric("376", "End of /MOTD command.")


@command("VERSION")
def version(c: IrcClient, msg, now):
    """VERSION [server]"""
    if no_such_server(c, msg):
        return
    c.numeric("351", f"relaynet-{__version__}", c.server_name, "IRC, MQTT, XMPP and SIP on one spanning tree")
    tokens = isupport(c)
    for i in range(0, len(tokens), 12):
        c.numeric("005", *tokens[i:i + 12], "are supported by this server")


@command("TIME")
def time_(c: IrcClient, msg, now):
    """TIME [server]"""
    if no_such_server(c, msg):
        return
    c.numeric("391", c.server_name, _time.strftime("%A %B %d %Y -- %H:%M:%S +00:00", _time.gmtime(now)))


@command("ADMIN")
def admin(c: IrcClient, msg, now):
    """ADMIN [server]"""
    if no_such_server(c, msg):
        return
    irc = c.svc.opts
    c.numeric("256", c.server_name, "Administrative info")
    c.numeric("257", irc.admin_location)
    c.numeric("258", irc.admin_name)
    c.numeric("259", irc.admin_email)


@command("INFO")
def info(c: IrcClient, msg, now):
    """INFO [server]"""
    if no_such_server(c, msg):
        return
    for line in (f"relaynet {__version__}", "A relay network for real-time messaging:",
                 "IRC, MQTT, XMPP and SIP over one spanning tree of servers."):
        c.numeric("371", line)
    c.numeric("374", "End of INFO list")


@command("ISON", min_params=1)
def ison(c: IrcClient, msg, now):
    """ISON nick [nick ...]"""
    found = []
    for p in msg.params:
        for n in p.split():
            u = c.net.find_nick(n)
            if u is not None:
                found.append(u.nick)
    c.numeric("303", " ".join(found))


@command("USERHOST", min_params=1)
def userhost(c: IrcClient, msg, now):
    """USERHOST nick [nick ...] (up to 5)"""
    out = []
    for n in msg.params[:5]:
        u = c.net.find_nick(n)
        if u is not None:
            out.append(f"{u.nick}{'*' if 'o' in u.modes else ''}={'-' if u.away else '+'}{u.ident}@{u.host}")
    c.numeric("302", " ".join(out))


def _who_flags(c: IrcClient, u: User, ch: Channel | None) -> str:
    f = "G" if u.away else "H"
    if "o" in u.modes:
        f += "*"
    if ch is not None:
        f += prefix_of(c, ch.members.get(u, ""))
    return f


def _who_line(c: IrcClient, u: User, ch: Channel | None, label: str) -> None:
    hops = c.net.router.hops(u.server) if c.net.router else 0
    c.numeric("352", label, u.ident, u.host, c.net.server_name(u.server), u.nick, _who_flags(c, u, ch),
              f"{hops} {u.realname}")


@command("WHO")
def who(c: IrcClient, msg, now):
    """WHO [mask [o]]"""
    mask = msg.params[0] if msg.params else "*"
    opers_only = len(msg.params) > 1 and "o" in msg.params[1]
    me = c.user
    if mask.startswith("#"):
        ch = c.net.find_channel(mask)
        if ch is not None and visible_channel(ch, me):
            shared = me in ch.members
            for u in ch.members:
                if (shared or "i" not in u.modes) and (not opers_only or "o" in u.modes):
                    _who_line(c, u, ch, ch.name)
    else:
        m = "*" if mask in ("0", "") else mask
        for u in list(c.net.users.values()):
            if opers_only and "o" not in u.modes:
                continue
            if "i" in u.modes and u is not me and not (set(u.channels) & set(me.channels)):
                continue
            if any(mask_match(m, s) for s in (u.nick, u.ident, u.host, u.realname, c.net.server_name(u.server))):
                ch = next((x for x in u.channels.values() if visible_channel(x, me)), None)
                _who_line(c, u, ch, ch.name if ch else "*")
    c.numeric("315", mask, "End of WHO list")


@command("WHOIS", min_params=1)
def whois(c: IrcClient, msg, now):
    """WHOIS [server] nick"""
    target = msg.params[-1].split(",")[0]
    u = c.net.find_nick(target)
    if u is None:
        c.numeric("401", target, "No such nick/channel")
        c.numeric("318", target, "End of /WHOIS list")
        return
    me = c.user
    c.numeric("311", u.nick, u.ident, u.host, "*", u.realname)
    chans = [prefix_of(c, ch.members[u]) + ch.name for ch in u.channels.values() if visible_channel(ch, me)]
    if chans:
        c.numeric("319", u.nick, " ".join(chans))
    c.numeric("312", u.nick, c.net.server_name(u.server), "relaynet server" if u.server == c.net.me.id
              else "remote server")
    if u.away:
        c.numeric("301", u.nick, u.away)
    if "o" in u.modes:
        c.numeric("313", u.nick, "is an IRC operator")
    if u.account:
        c.numeric("330", u.nick, u.account, "is logged in as")
    if u.proto != "irc":
        c.numeric("320", u.nick, f"is connected through {u.proto.upper()}")
    if u.session is not None and getattr(u.session.t, "tls", False):
        c.numeric("671", u.nick, "is using a secure connection")
    if u.session is not None:
        c.numeric("317", u.nick, str(int(now - u.last_active)), str(int(u.signon)), "seconds idle, signon time")
    c.numeric("318", u.nick, "End of /WHOIS list")


@command("WHOWAS", min_params=1)
def whowas(c: IrcClient, msg, now):
    """WHOWAS nick [count]"""
    nick = msg.params[0]
    count = int(msg.params[1]) if len(msg.params) > 1 and msg.params[1].isdigit() else 0
    key = c.net.fold(nick)
    found = [w for w in reversed(c.net.whowas) if c.net.fold(w.nick) == key]
    if count > 0:
        found = found[:count]
    if not found:
        c.numeric("406", nick, "There was no such nickname")
    for w in found:
        c.numeric("314", w.nick, w.ident, w.host, "*", w.realname)
        c.numeric("312", w.nick, w.server, _time.strftime("%a %b %d %H:%M:%S %Y", _time.gmtime(w.time)))
    c.numeric("369", nick, "End of WHOWAS")


# ---------------------------------------------------------------- user state

@command("AWAY")
def away(c: IrcClient, msg, now):
    """AWAY [:message]"""
    u = c.user
    text = msg.params[0][:c.core.config.network.awaylen] if msg.params and msg.params[0] else None
    u.away = text
    c.numeric("306" if text else "305",
              "You have been marked as being away" if text else "You are no longer marked as being away")
    c.net.update_user(u, "away", now)


@command("SETNAME", min_params=1)
def setname(c: IrcClient, msg, now):
    """SETNAME :realname"""
    text = msg.params[0]
    if not text or len(text) > 200:
        c.reply("FAIL", "SETNAME", "INVALID_REALNAME", "Realname is not valid")
        return
    c.user.realname = text
    c.net.update_user(c.user, "realname", now)


@command("OPER", min_params=2)
def oper(c: IrcClient, msg, now):
    """OPER name password"""
    name, password = msg.params[0], msg.params[1]
    block = next((o for o in c.svc.opts.opers if o.name == name), None)
    if block is None or not verify_oper_password(block.password, password):
        c.numeric("464", "Password incorrect")
        return
    u = c.user
    subject = c.core.subject(u.account, u.ip, f"{u.ident}@{u.host}")
    if not c.core.acl.allowed(block.rule, subject):
        c.numeric("491", "No O-lines for your host")
        return
    c.net.set_user_mode(u, "o", True)
    u.oper_name = name
    c.numeric("381", "You are now an IRC operator")
    c.send(_mode_line(u, "+o"))
    c.net.update_user(u, "modes", now)


def _mode_line(u: User, modes: str) -> bytes:
    from relay.proto.irc import build
    return build(u.prefix, "MODE", u.nick, modes)


@command("KILL", min_params=2, oper=True)
def kill(c: IrcClient, msg, now):
    """KILL nick :reason"""
    u = c.net.find_nick(msg.params[0])
    if u is None:
        c.numeric("401", msg.params[0], "No such nick/channel")
        return
    reason = f"Killed ({c.user.nick} ({msg.params[1]}))"
    if u.session is not None:
        u.session.quit_and_close(reason, now)
    else:
        # Every server removes the user; its own server also closes the connection.
        c.net.router.user_killed(u, reason)
        c.net.quit(u, reason, now, propagate=False)


# ---------------------------------------------------------------- channels

def send_names(c: IrcClient, ch: Channel) -> None:
    me = c.user
    if visible_channel(ch, me):
        shared = me in ch.members
        uhnames = "userhost-in-names" in c.caps
        names = [prefix_of(c, st) + (u.prefix if uhnames else u.nick)
                 for u, st in ch.members.items() if shared or "i" not in u.modes]
        symbol = "@" if "s" in ch.modes else "="
        head = len(c.server_name) + len(me.nick) + len(ch.name) + 20
        line: list[str] = []
        size = head
        for n in names:
            if line and size + len(n) + 1 > 500:
                c.numeric("353", symbol, ch.name, " ".join(line))
                line, size = [], head
            line.append(n)
            size += len(n) + 1
        if line:
            c.numeric("353", symbol, ch.name, " ".join(line))
    c.numeric("366", ch.name, "End of /NAMES list")


def send_topic(c: IrcClient, ch: Channel, empty_reply: bool) -> None:
    if ch.topic:
        c.numeric("332", ch.name, ch.topic)
        c.numeric("333", ch.name, ch.topic_by, str(int(ch.topic_ts)))   # the setter's nick!ident@host
    elif empty_reply:
        c.numeric("331", ch.name, "No topic is set")


@command("JOIN", min_params=1)
def join(c: IrcClient, msg, now):
    """JOIN channel[,channel] [key[,key]] | JOIN 0"""
    u = c.user
    net = c.net
    if msg.params[0] == "0":
        for ch in list(u.channels.values()):
            net.part(u, ch, "Left all channels", now)
        return
    keys = msg.params[1].split(",") if len(msg.params) > 1 else []
    chanlen = c.core.config.network.channellen
    for i, name in enumerate(split_targets(msg.params[0])):
        if not valid_channel(name, chanlen):
            c.numeric("403", name, "No such channel")
            continue
        if c.net.fold(name) in u.channels:
            continue
        try:
            ch = net.check_join(u, name, keys[i] if i < len(keys) else None)
        except JoinRefused as e:
            code, text = JOIN_ERRORS[e.code]
            c.numeric(code, name, text)
            continue
        ch = net.join(u, name, now)
        send_topic(c, ch, empty_reply=False)
        send_names(c, ch)


@command("PART", min_params=1)
def part(c: IrcClient, msg, now):
    """PART channel[,channel] [:reason]"""
    reason = msg.params[1] if len(msg.params) > 1 else ""
    for name in split_targets(msg.params[0]):
        ch = c.net.find_channel(name)
        if ch is None:
            c.numeric("403", name, "No such channel")
        elif c.user not in ch.members:
            c.numeric("442", name, "You're not on that channel")
        else:
            c.net.part(c.user, ch, fit(reason, c.user.prefix, "PART", ch.name), now)


@command("TOPIC", min_params=1)
def topic(c: IrcClient, msg, now):
    """TOPIC channel [:topic]"""
    name = msg.params[0]
    ch = c.net.find_channel(name)
    if ch is None:
        c.numeric("403", name, "No such channel")
        return
    if len(msg.params) == 1:
        if not visible_channel(ch, c.user):
            c.numeric("442", name, "You're not on that channel")
            return
        send_topic(c, ch, empty_reply=True)
        return
    if c.user not in ch.members:
        c.numeric("442", name, "You're not on that channel")
        return
    if not c.net.may_set_topic(ch, c.user):
        c.numeric("482", ch.name, "You're not channel operator")
        return
    text = fit(msg.params[1][:c.core.config.network.topiclen], c.user.prefix, "TOPIC", ch.name)
    c.net.set_topic(c.user, ch, text, now)


@command("NAMES")
def names(c: IrcClient, msg, now):
    """NAMES [channel[,channel]]"""
    if not msg.params:
        c.numeric("366", "*", "End of /NAMES list")
        return
    for name in split_targets(msg.params[0]):
        ch = c.net.find_channel(name)
        if ch is None:
            c.numeric("366", name, "End of /NAMES list")
        else:
            send_names(c, ch)


@command("LIST")
def list_(c: IrcClient, msg, now):
    """LIST [channel[,channel]]"""
    c.numeric("321", "Channel", "Users  Name")
    if msg.params and msg.params[0]:
        chans = [ch for ch in (c.net.find_channel(n) for n in split_targets(msg.params[0])) if ch is not None]
    else:
        chans = list(c.net.channels.values())
    for ch in chans:
        if visible_channel(ch, c.user):
            modes, args = ch.mode_string(show_key=False)
            c.numeric("322", ch.name, str(len(ch.members)), f"[{modes}] {ch.topic}")
    c.numeric("323", "End of /LIST")


@command("INVITE", min_params=2)
def invite(c: IrcClient, msg, now):
    """INVITE nick channel"""
    nick, name = msg.params[0], msg.params[1]
    target = c.net.find_nick(nick)
    if target is None:
        c.numeric("401", nick, "No such nick/channel")
        return
    ch = c.net.find_channel(name)
    if ch is None:
        c.numeric("403", name, "No such channel")
        return
    if c.user not in ch.members:
        c.numeric("442", ch.name, "You're not on that channel")
        return
    if target in ch.members:
        c.numeric("443", target.nick, ch.name, "is already on channel")
        return
    if "i" in ch.modes and not is_op(ch, c.user):
        c.numeric("482", ch.name, "You're not channel operator")
        return
    c.numeric("341", target.nick, ch.name)
    if target.away:
        c.numeric("301", target.nick, target.away)
    c.net.invite(c.user, target, ch, now)


@command("KICK", min_params=2)
def kick(c: IrcClient, msg, now):
    """KICK channel nick[,nick] [:reason]"""
    ch = c.net.find_channel(msg.params[0])
    if ch is None:
        c.numeric("403", msg.params[0], "No such channel")
        return
    if c.user not in ch.members:
        c.numeric("442", ch.name, "You're not on that channel")
        return
    if not is_op(ch, c.user):
        c.numeric("482", ch.name, "You're not channel operator")
        return
    reason = (msg.params[2] if len(msg.params) > 2 and msg.params[2] else c.user.nick)[:c.core.config.network.kicklen]
    for nick in split_targets(msg.params[1]):
        target = c.net.find_nick(nick)
        if target is None or target not in ch.members:
            c.numeric("441", nick, ch.name, "They aren't on that channel")
            continue
        c.net.kick(c.user, ch, target, fit(reason, c.user.prefix, "KICK", ch.name, target.nick), now)


# ---------------------------------------------------------------- modes

@command("MODE", min_params=1)
def mode(c: IrcClient, msg, now):
    """MODE target [modestring [args...]]"""
    target = msg.params[0]
    if target.startswith("#"):
        channel_mode(c, msg, now)
    else:
        user_mode(c, msg, now)


def user_mode(c: IrcClient, msg, now):
    u = c.user
    target = c.net.find_nick(msg.params[0])
    if target is None:
        c.numeric("401", msg.params[0], "No such nick/channel")
        return
    if target is not u:
        c.numeric("502", "Can't change mode for other users" if len(msg.params) > 1 else "Can't view modes for other users")
        return
    if len(msg.params) == 1:
        c.numeric("221", "+" + "".join(sorted(u.modes)))
        return
    sign, changed, unknown = "+", [], False
    for m in msg.params[1]:
        if m in "+-":
            sign = m
        elif m in "iw":
            if c.net.set_user_mode(u, m, sign == "+"):
                changed.append(sign + m)
        elif m == "o":
            if sign == "-" and "o" in u.modes:  # one may drop +o, never take it
                c.net.set_user_mode(u, "o", False)
                u.oper_name = None
                changed.append("-o")
        else:
            unknown = True
    if unknown:
        c.numeric("501", "Unknown MODE flag")
    if changed:
        out, s = "", ""
        for ch in changed:
            if ch[0] != s:
                out += ch[0]
                s = ch[0]
            out += ch[1]
        c.send(_mode_line(u, out))
        c.net.update_user(u, "modes", now)


def channel_mode(c: IrcClient, msg, now):
    u = c.user
    ch = c.net.find_channel(msg.params[0])
    if ch is None:
        c.numeric("403", msg.params[0], "No such channel")
        return
    if len(msg.params) == 1:
        modes, args = ch.mode_string(show_key=u in ch.members)
        c.numeric("324", ch.name, modes, *args)
        c.numeric("329", ch.name, str(int(ch.ts)))
        return
    args = list(msg.params[2:])
    sign = "+"
    changes: list[tuple[str, str, str | None]] = []
    lists_shown: set[str] = set()
    limit = c.svc.opts.modes_per_line
    op = is_op(ch, u) or "o" in u.modes and False
    needs_op_reported = False
    for m in msg.params[1]:
        if m in "+-":
            sign = m
            continue
        if m in CHANMODES_LIST:
            if not args:
                if m not in lists_shown:
                    lists_shown.add(m)
                    item, end, text = LIST_NUMERICS[m]
                    for b in ch.lists[m]:
                        c.numeric(item, ch.name, b.mask, b.setter, str(int(b.ts)))
                    c.numeric(end, ch.name, text)
                continue
            arg = normalize_mask(args.pop(0))
            changes.append((sign, m, arg))
        elif m in "ov":
            if not args:
                continue
            nick = args.pop(0)
            target = c.net.find_nick(nick)
            if target is None:
                c.numeric("401", nick, "No such nick/channel")
                continue
            if target not in ch.members:
                c.numeric("441", nick, ch.name, "They aren't on that channel")
                continue
            changes.append((sign, m, target.nick))
        elif m == "k":
            if sign == "+":
                if not args:
                    continue
                key = args.pop(0)
                if not key or " " in key or "," in key or len(key) > 23:
                    c.numeric("525", ch.name, "Key is not well-formed")
                    continue
                changes.append((sign, m, key))
            else:
                if args:
                    args.pop(0)
                changes.append((sign, m, None))
        elif m == "l":
            if sign == "+":
                if not args:
                    continue
                val = args.pop(0)
                if not val.isdigit() or int(val) <= 0:
                    c.numeric("696", ch.name, "l", val, "Invalid limit")
                    continue
                changes.append((sign, m, str(int(val))))
            else:
                changes.append((sign, m, None))
        elif m in CHANMODES_FLAG:
            changes.append((sign, m, None))
        else:
            c.numeric("472", m, "is unknown mode char to me")
    if not changes:
        return
    if not op:
        if u not in ch.members:
            c.numeric("442", ch.name, "You're not on that channel")
        else:
            c.numeric("482", ch.name, "You're not channel operator")
        return
    # MODES limits the modes *with a parameter* per command (Modern); flags are not counted.
    kept, with_param = [], 0
    for chg in changes:
        if chg[2] is not None:
            with_param += 1
            if with_param > limit:
                continue
        kept.append(chg)
    c.net.apply_modes(u, ch, kept, now)


# ---------------------------------------------------------------- messages

@command("PRIVMSG")
def privmsg(c: IrcClient, msg, now):
    """PRIVMSG target[,target] :text"""
    _message(c, msg, now, MESSAGE)


@command("NOTICE")
def notice(c: IrcClient, msg, now):
    """NOTICE target[,target] :text"""
    _message(c, msg, now, NOTICE)


@command("TAGMSG", min_params=1)
def tagmsg(c: IrcClient, msg, now):
    """TAGMSG target[,target]"""
    _message(c, msg, now, TAG_ONLY)


def _client_tags(msg) -> dict:
    """The client-only tags a client may send on; `+relaynet/` ones are the server's (a redaction)."""
    return {k: v for k, v in msg.tags.items() if k.startswith("+") and not k.startswith("+relaynet/")} \
        if msg.tags else {}


def _undeliverable(target: User) -> str | None:
    """Why a local bridged member cannot receive a direct message now (an MQTT client with no inbox
    subscription), or None. Its session says so (MemberSession.direct_refusal); remote ones answer at home."""
    s = target.session
    return s.direct_refusal() if s is not None else None


def _message(c: IrcClient, msg, now, kind: str):
    verb = msg.command
    quiet = kind is NOTICE  # NOTICE never triggers automatic replies
    if not msg.params or not msg.params[0]:
        if not quiet:
            c.numeric("411", f"No recipient given ({verb})")
        return
    text = ""
    if kind is not TAG_ONLY:
        if len(msg.params) < 2 or not msg.params[1]:
            if not quiet:
                c.numeric("412", "No text to send")
            return
        text = msg.params[1]
    targets = split_targets(msg.params[0])
    if len(targets) > c.svc.opts.maxtargets:
        if not quiet:
            c.numeric("407", msg.params[0], "Too many recipients")
        return
    u = c.user
    tags = _client_tags(msg)
    echo = "echo-message" in c.caps
    net = c.net
    for t in targets:
        if t[0] == "#":
            ch = net.find_channel(t)
            if ch is None:
                if not quiet:
                    c.numeric("401", t, "No such nick/channel")
                continue
            if not c.net.may_speak(ch, u):
                if not quiet:
                    c.numeric("404", ch.name, "Cannot send to channel")
                continue
            ev = net.message(u, ch, kind, fit(text, u.prefix, verb, ch.name), now, tags)
            # Kept so the sender may REDACT it: only a client with message-tags ever sees a msgid.
            if ev is not None and kind is not TAG_ONLY and c.tagbits & T_MSGTAGS:
                c.svc.sent_message(ev)
        else:
            target = net.find_nick(t)
            if target is None:
                if not quiet:
                    c.numeric("401", t, "No such nick/channel")
                continue
            why = _undeliverable(target)
            if why:
                # A server NOTICE (not 401: the nick exists, and clients show a 401's nick, not its text).
                if kind is MESSAGE:
                    c.reply("NOTICE", u.nick, f"*** Message to {target.nick} not delivered: {why}")
                continue
            if target is u and echo and c.label_buf is not None:
                # labeled-response: to oneself, only the echo is the labeled reply, not the delivery.
                buf, c.label_buf = c.label_buf, None
                try:
                    ev = net.message(u, target, kind, fit(text, u.prefix, verb, target.nick), now, tags)
                finally:
                    c.label_buf = buf
            else:
                ev = net.message(u, target, kind, fit(text, u.prefix, verb, target.nick), now, tags)
            if target.away and kind is MESSAGE:
                c.numeric("301", target.nick, target.away)
        if echo and ev is not None and (kind is not TAG_ONLY or "message-tags" in c.caps):
            c.deliver(ev)
