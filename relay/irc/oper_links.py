"""IRC operator commands for the server tree: CONNECT, SQUIT, LINKS, MAP."""

from __future__ import annotations

from relay.irc.client import IrcClient
from relay.irc.commands import command


@command("CONNECT", min_params=1, oper=True)
def connect(c: IrcClient, msg, now):
    """CONNECT server"""
    try:
        text = c.core.links.connect(msg.params[0], now)
    except (KeyError, RuntimeError):
        c.numeric("402", msg.params[0], "No such server")
        return
    c.reply("NOTICE", c.target, f"*** {text}")


@command("SQUIT", min_params=1, oper=True)
def squit(c: IrcClient, msg, now):
    """SQUIT server [:reason]"""
    reason = msg.params[1] if len(msg.params) > 1 else f"SQUIT by {c.user.nick}"
    try:
        text = c.core.links.unlink(msg.params[0], reason, now)
    except KeyError:
        c.numeric("402", msg.params[0], "No such server")
        return
    c.reply("NOTICE", c.target, f"*** {text}")


@command("LINKS")
def links(c: IrcClient, msg, now):
    """LINKS"""
    lk = c.core.links
    for sid in lk.tree.servers():
        sv = lk.tree.server(sid)
        parent = c.net.server_name(sv.parent) if sv.parent else sv.name
        c.numeric("364", sv.name, parent, f"{sv.hops} {sv.description or 'relaynet server'}")
    c.numeric("365", "*", "End of /LINKS list")


@command("MAP")
def map_(c: IrcClient, msg, now):
    """MAP"""
    for line in c.core.links.map_text(now).splitlines():
        c.numeric("015", line)
    c.numeric("017", "End of /MAP")
