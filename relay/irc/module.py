"""The IRC protocol as a module: the `irc` listener protocol, its command table, its clients.

Loaded on every server (relay.core.modules.CORE_MODULES). Other modules add IRC
commands as items: `module.add_item("irc-command", IrcCommand(...))`; this
module adds them to its table and takes them out when their owner unloads.
"""

from __future__ import annotations

from relay.irc import oper_links, register  # noqa: F401  (CONNECT, SQUIT, LINKS, MAP; REGISTER)
from relay.irc.client import IrcClient
from relay.irc.commands import IRC_COMMANDS
from relay.irc.options import IrcOptions
from relay.irc.table import IrcCommand

CONFIG_SECTION = True   # options come from the top-level irc: section
Options = IrcOptions

SWEEP_INTERVAL = 5.0


class IrcService:
    """What IRC clients share on one server: options, the command table, the local clients."""

    def __init__(self, core, opts: IrcOptions):
        self.core = core
        self.opts = opts
        self.commands = IRC_COMMANDS.copy()
        self.local: dict[IrcClient, None] = {}  # registered or not
        self.registered = 0  # of those, registered (LUSERS' unknown connections are the rest)

    def new_client(self, transport, listener=None, now: float | None = None) -> IrcClient:
        return IrcClient(self, transport, self.core.now() if now is None else now)

    def sweep(self, now: float) -> None:
        """Registration timeouts, PINGs and ping timeouts for every local client, in one timer."""
        for c in list(self.local):
            c.check_alive(now)

    def add_command(self, cmd: IrcCommand, owner: str) -> None:
        self.commands.add(cmd.name, cmd.handler, owner=owner, min_params=cmd.min_params,
                          registered=cmd.registered, oper=cmd.oper, count_idle=cmd.count_idle)

    def remove_command(self, cmd: IrcCommand, owner: str) -> None:
        self.commands.remove(cmd.name, owner)


def setup(module) -> None:
    core = module.core
    svc = IrcService(core, module.options)
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
    module.on_unload(lambda: [c.quit_and_close("IRC module unloaded", core.now()) for c in list(svc.local)])
