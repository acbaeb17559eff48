"""The IRC command table, declarative like ergo's commands.go.

Registration, privilege and parameter-count checks run once in `dispatch()`;
handlers are thin and headed by their syntax line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger("relay.irc")


@dataclass(slots=True)
class IrcCommand:
    name: str
    handler: Callable
    min_params: int = 0
    registered: bool = True      # only after registration
    oper: bool = False           # needs user mode +o
    owner: str = "core"
    count_idle: bool = True      # resets the WHOIS idle time


class CommandTable:
    def __init__(self) -> None:
        self.commands: dict[str, IrcCommand] = {}
        self.welcome: Callable = lambda client, now: None
        # A command that needs registration, before it (451; commands.py also refuses HTTP requests here).
        self.not_registered: Callable = lambda client, msg, now: client.numeric("451", "You have not registered")
        self.calls: dict[str, int] = {}

    def copy(self) -> "CommandTable":
        t = CommandTable()
        t.commands = dict(self.commands)
        t.welcome = self.welcome
        t.not_registered = self.not_registered
        return t

    def add(self, name: str, handler: Callable, owner: str = "core", **spec) -> None:
        name = name.upper()
        if name in self.commands and self.commands[name].owner != owner:
            raise ValueError(f"IRC command {name} already exists (from {self.commands[name].owner})")
        self.commands[name] = IrcCommand(name, handler, owner=owner, **spec)

    def remove(self, name: str, owner: str) -> None:
        cmd = self.commands.get(name.upper())
        if cmd is not None and cmd.owner == owner:
            del self.commands[name.upper()]

    def command(self, name: str, **spec):
        def deco(fn):
            self.add(name, fn, **spec)
            return fn
        return deco

    def dispatch(self, client, msg, now: float) -> None:
        # labeled-response: the dispatcher's own errors (421, 451, 461, 481) are labeled too.
        label = msg.tags.get("label") if msg.tags else None
        if label is None:
            return self._dispatch(client, msg, now)
        client.begin_label(label)
        try:
            self._dispatch(client, msg, now)
        finally:
            client.end_label()

    def _dispatch(self, client, msg, now: float) -> None:
        cmd = self.commands.get(msg.command)
        if cmd is None:
            if client.registered:
                client.numeric("421", msg.command, "Unknown command")
            else:
                self.not_registered(client, msg, now)
            return
        if cmd.registered and not client.registered:
            self.not_registered(client, msg, now)
            return
        if len(msg.params) < cmd.min_params:
            client.numeric("461", msg.command, "Not enough parameters")
            return
        if cmd.oper and (client.user is None or "o" not in client.user.modes):
            client.numeric("481", "Permission Denied- You're not an IRC operator")
            return
        if cmd.count_idle and client.user is not None:
            client.user.last_active = now
        try:
            cmd.handler(client, msg, now)
        except Exception:
            log.exception("IRC command %s (from %s) raised", msg.command, cmd.owner)
            client.reply("FAIL", msg.command, "INTERNAL_ERROR", "Internal error; the command was not completed")
