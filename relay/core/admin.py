"""Operator commands: one declarative table for the shell and relayctl.

A command is a name (possibly several words: "module load"), a syntax line,
a help text and its argument counts. `dispatch()` matches the longest name,
checks the argument count once, and calls the handler with the remaining
words. Handlers return a `Reply`: text for people and data for --json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


class AdminError(Exception):
    """A refused command; the text goes back to the operator, exit status `status`."""

    def __init__(self, text: str, status: int = 1):
        super().__init__(text)
        self.status = status


@dataclass(slots=True)
class Reply:
    text: str = ""
    data: Any = None
    status: int = 0


@dataclass(slots=True)
class AdminCommand:
    name: str
    handler: Callable[..., Reply]
    syntax: str
    help: str
    min_args: int = 0
    max_args: int | None = 0
    owner: str = "core"
    words: tuple[str, ...] = field(default=())


class AdminTable:
    def __init__(self) -> None:
        self.commands: dict[str, AdminCommand] = {}

    def add(self, name: str, handler: Callable, syntax: str = "", help: str = "",
            min_args: int = 0, max_args: int | None = 0, owner: str = "core") -> None:
        if name in self.commands:
            raise ValueError(f"operator command {name!r} already exists (from {self.commands[name].owner})")
        self.commands[name] = AdminCommand(name, handler, syntax or name, help, min_args, max_args,
                                           owner, tuple(name.split()))

    def remove(self, name: str, owner: str) -> None:
        cmd = self.commands.get(name)
        if cmd is not None and cmd.owner == owner:
            del self.commands[name]

    def lookup(self, argv: list[str]) -> tuple[AdminCommand, list[str]]:
        for n in range(min(len(argv), 3), 0, -1):
            cmd = self.commands.get(" ".join(argv[:n]))
            if cmd is not None:
                return cmd, argv[n:]
        if not argv:
            raise AdminError("no command given; try 'help'", 2)
        groups = sorted({c.name for c in self.commands.values() if c.words[0] == argv[0]})
        if groups:
            raise AdminError(f"usage: one of: {', '.join(groups)}", 2)
        raise AdminError(f"unknown command {argv[0]!r}; try 'help'", 2)

    def dispatch(self, argv: list[str], ctx: Any) -> Reply:
        cmd, args = self.lookup(argv)
        if len(args) < cmd.min_args or (cmd.max_args is not None and len(args) > cmd.max_args):
            raise AdminError(f"usage: {cmd.syntax}", 2)
        return cmd.handler(ctx, *args)

    def help_text(self, topic: list[str] | None = None) -> Reply:
        cmds = sorted(self.commands.values(), key=lambda c: c.name)
        if topic:
            cmds = [c for c in cmds if c.name == " ".join(topic) or c.words[0] == topic[0]]
            if not cmds:
                raise AdminError(f"no command {' '.join(topic)!r}", 2)
        width = max((len(c.syntax) for c in cmds), default=0)
        lines = [f"{c.syntax.ljust(width)}  {c.help}" for c in cmds]
        return Reply("\n".join(lines), [{"name": c.name, "syntax": c.syntax, "help": c.help, "owner": c.owner}
                                        for c in cmds])
