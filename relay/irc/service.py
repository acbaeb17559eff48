"""What the IRC clients of one server share: options, the command table, the local clients."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from relay.irc.options import IrcOptions
from relay.irc.table import CommandTable, IrcCommand

if TYPE_CHECKING:
    from relay.core.interfaces import CoreServices


SENT_KEPT = 4096


class IrcService:
    """What IRC clients share on one server: options, the command table, the local clients."""

    def __init__(self, core: "CoreServices", opts: IrcOptions, commands: CommandTable, client_cls: type):
        self.core = core
        self.opts = opts
        self.commands = commands
        self.client_cls = client_cls
        self.local: dict = {}  # IrcClient -> None, registered or not
        self.registered = 0    # of those, registered (LUSERS' unknown connections are the rest)
        # msgid -> (channel key, uid) of the channel messages local clients sent lately: the sender
        # may REDACT its own (redact.py)
        self.sent: OrderedDict[str, tuple[str, str]] = OrderedDict()

    def sent_message(self, ev) -> None:
        self.sent[ev.msgid] = (ev.target.key_name, ev.source.uid)
        if len(self.sent) > SENT_KEPT:
            self.sent.popitem(last=False)

    def new_client(self, transport, listener=None, now: float | None = None):
        """The `irc` listener protocol's factory."""
        return self.client_cls(self, transport, self.core.now() if now is None else now)

    def sweep(self, now: float) -> None:
        """Registration timeouts, PINGs and ping timeouts for every local client, in one timer."""
        for c in list(self.local):
            c.check_alive(now)

    def add_command(self, cmd: IrcCommand, owner: str) -> None:
        self.commands.add(cmd.name, cmd.handler, owner=owner, min_params=cmd.min_params,
                          registered=cmd.registered, oper=cmd.oper, count_idle=cmd.count_idle)

    def remove_command(self, cmd: IrcCommand, owner: str) -> None:
        self.commands.remove(cmd.name, owner)
