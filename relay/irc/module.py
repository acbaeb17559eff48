"""The IRC protocol as a module: the `irc` listener protocol, its command table, its clients.

Loaded on every server (relay.core.modules.CORE_MODULES). Other modules add IRC
commands as items: `module.add_item("irc-command", IrcCommand(...))`; this
module adds them to its table and takes them out when their owner unloads.
"""

from __future__ import annotations

from relay.core.http_routes import ANY_LINES, BINARY_LINES, TEXT_LINES
from relay.irc import oper_links, redact, register  # noqa: F401  (CONNECT, SQUIT, LINKS, MAP; REDACT; REGISTER)
from relay.irc.client import IrcClient
from relay.irc.commands import IRC_COMMANDS
from relay.irc.options import IrcOptions
from relay.irc.service import IrcService

CONFIG_SECTION = True   # options come from the top-level irc: section
Options = IrcOptions

SWEEP_INTERVAL = 5.0


def setup(module) -> None:
    core = module.core
    svc = IrcService(core, module.options, IRC_COMMANDS.copy(), IrcClient)
    module.provide("irc", svc)
    for item, owner in core.items.lists.get("irc-command", ()):
        svc.add_command(item, owner)
    module.hook("item_added/irc-command", svc.add_command)
    module.hook("item_removed/irc-command", svc.remove_command)
    o = svc.opts
    # Timeouts are enforced to within a quarter of the shortest one (5 s with the defaults).
    module.every(min(SWEEP_INTERVAL, o.registration_timeout / 4, o.ping_interval / 4, o.ping_timeout / 4),
                 svc.sweep)
    module.protocol("irc", svc.new_client)

    def reloaded(changed):
        if "irc" in changed and core.config.section("irc") is not None:
            svc.opts = core.config.section("irc")
    module.hook("config_reloaded", reloaded)
    # IRC over WebSocket (IRCv3 websocket); `/` too, where web IRC clients connect by default.
    irc_ws = {"binary.ircv3.net": BINARY_LINES, "text.ircv3.net": TEXT_LINES, None: ANY_LINES}
    for path in ("/irc", "/"):
        module.websocket_route(path, irc_ws, svc.new_client)
    module.on_unload(lambda: [c.quit_and_close("IRC module unloaded", core.now()) for c in list(svc.local)])
