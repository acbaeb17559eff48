"""Operator commands: one declarative table for the shell, relayctl and (later) the REST API.

A command is declared by its syntax line and a help text:

    "module load NAME"        the name is the leading lower-case words ("module load"),
    "kick CHANNEL NICK [REASON...]"   then the arguments: NAME required, [NAME] optional,
                              NAME... / [NAME...] any number more.

The syntax line is the one source of a command's argument counts, so `dispatch()`
checks them once, and `add()` refuses a handler that could not take them (a module
with a wrong declaration fails to load instead of failing when an operator calls it).
Each argument has a kind (what names complete it: modules, accounts, servers...), taken
from its placeholder (USER -> account) unless the command says otherwise.
Handlers receive the context and the remaining words, and return a `Reply`.
"""

from __future__ import annotations

import inspect
import re
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


# Placeholders whose kind is the same in every command; others are free text unless a command says.
PLACEHOLDER_KINDS = {
    "USER": "account", "ACCOUNT": "account", "CHANNEL": "channel", "NICK": "nick",
    "LEVEL": "log-level", "PEER": "peer", "SERVER": "server", "COMMAND": "command", "KIND": "kind",
}
_PLACEHOLDER = re.compile(r"\[?(--[a-z0-9-]+|[A-Z][A-Z0-9_-]*)(\.\.\.)?\]?")
_WORD = re.compile(r"[a-z][a-z0-9_-]*")  # command words: lower case, like module names (web_sample)


@dataclass(frozen=True, slots=True)
class Arg:
    name: str            # the placeholder: NAME, or a literal flag such as --digest
    kind: str | None     # what completes it ("module-loaded", "account", ...); None: free text
    optional: bool = False
    rest: bool = False   # takes every remaining word

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "optional": self.optional, "rest": self.rest}


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """A command as declared: what relayctl can know without a running server."""
    name: str
    syntax: str
    help: str
    args: tuple[Arg, ...]

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(self.name.split())

    @property
    def arity(self) -> tuple[int, int | None]:
        lo = sum(1 for a in self.args if not a.optional and not a.rest)
        hi = None if any(a.rest for a in self.args) else len(self.args)
        return lo, hi

    def as_dict(self) -> dict:
        return {"name": self.name, "syntax": self.syntax, "help": self.help,
                "args": [a.as_dict() for a in self.args]}


def parse_syntax(syntax: str, help: str = "", kinds: dict[str, str] | None = None) -> CommandSpec:
    """'module unload NAME' -> CommandSpec('module unload', args=(NAME,)); ValueError if malformed."""
    tokens = syntax.split()
    words: list[str] = []
    while tokens and _WORD.fullmatch(tokens[0]):
        words.append(tokens.pop(0))
    if not words:
        raise ValueError(f"syntax {syntax!r}: must start with the command's lower-case words")
    kinds = kinds or {}
    args: list[Arg] = []
    for tok in tokens:
        m = _PLACEHOLDER.fullmatch(tok)
        if m is None or tok.startswith("[") != tok.endswith("]"):
            raise ValueError(f"syntax {syntax!r}: {tok!r} is not NAME, [NAME], NAME... or [NAME...]")
        name, rest = m.group(1), bool(m.group(2))
        optional = tok.startswith("[")
        if args and (args[-1].rest or (args[-1].optional and not optional)):
            raise ValueError(f"syntax {syntax!r}: {tok} follows an optional or repeated argument")
        if name in kinds:
            kind = kinds[name] or None   # None: free text, whatever the placeholder usually means
        else:
            kind = "literal" if name.startswith("--") else PLACEHOLDER_KINDS.get(name)
        args.append(Arg(name, kind, optional, rest))
    unknown = set(kinds) - {a.name for a in args}
    if unknown:
        raise ValueError(f"syntax {syntax!r}: kinds given for missing arguments {sorted(unknown)}")
    return CommandSpec(" ".join(words), syntax, help, tuple(args))


def specs_of(declared: dict[str, str]) -> list[CommandSpec]:
    """A module's static `COMMANDS = {syntax line: help}`, parsed."""
    return [parse_syntax(syntax, text) for syntax, text in declared.items()]


def _takes(handler: Callable, lo: int, hi: int | None) -> str | None:
    """Why `handler(ctx, *words)` would fail for some allowed word count, or None."""
    try:
        sig = inspect.signature(handler)
    except (TypeError, ValueError):
        return None  # a builtin without a signature: trust the declaration
    params = list(sig.parameters.values())
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        counts = [lo] if hi is None else [lo, hi]
    elif hi is None:
        return f"takes a fixed number of words but the syntax allows any number from {lo}"
    else:
        counts = [lo, hi]
    for n in counts:
        try:
            sig.bind(object(), *([""] * n))
        except TypeError as e:
            return f"cannot take {n} word(s) ({e})"
    return None


@dataclass(slots=True)
class AdminCommand:
    spec: CommandSpec
    handler: Callable[..., Reply]
    owner: str = "core"
    min_args: int = 0
    max_args: int | None = 0

    name = property(lambda self: self.spec.name)
    syntax = property(lambda self: self.spec.syntax)
    help = property(lambda self: self.spec.help)
    words = property(lambda self: self.spec.words)


@dataclass(slots=True)
class AdminTable:
    commands: dict[str, AdminCommand] = field(default_factory=dict)
    # kind -> the names of that kind (for completion): fn(ctx) -> iterable of str
    kinds: dict[str, Callable[[Any], Any]] = field(default_factory=dict)

    def add(self, name: str, handler: Callable, syntax: str = "", help: str = "",
            min_args: int | None = None, max_args: int | None | str = "syntax", owner: str = "core",
            kinds: dict[str, str] | None = None) -> None:
        """Add a command; its argument counts come from `syntax` unless min_args/max_args override them."""
        if name in self.commands:
            raise ValueError(f"operator command {name!r} already exists (from {self.commands[name].owner})")
        spec = parse_syntax(syntax or name, help, kinds)
        if spec.name != name:
            raise ValueError(f"operator command {name!r}: its syntax {syntax!r} names {spec.name!r}")
        unknown = {a.kind for a in spec.args if a.kind and a.kind != "literal"} - set(self.kinds)
        if unknown:
            raise ValueError(f"operator command {name!r}: unknown argument kind(s) {sorted(unknown)}")
        lo, hi = spec.arity
        lo = lo if min_args is None else min_args
        hi = hi if max_args == "syntax" else max_args
        problem = _takes(handler, lo, hi)
        if problem:
            raise ValueError(f"operator command {name!r}: its handler {problem}; syntax: {spec.syntax}")
        self.commands[name] = AdminCommand(spec, handler, owner, lo, hi)

    def remove(self, name: str, owner: str) -> None:
        cmd = self.commands.get(name)
        if cmd is not None and cmd.owner == owner:
            del self.commands[name]

    def kind(self, name: str, names: Callable[[Any], Any]) -> None:
        """Declare an argument kind and how to list its names (for completion)."""
        self.kinds[name] = names

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

    def names(self, kind: str, prefix: str, ctx: Any, limit: int = 200) -> list[str]:
        """The names of one kind that start with `prefix` (case-insensitive), sorted, at most `limit`."""
        fn = self.kinds.get(kind)
        if fn is None:
            raise AdminError(f"no argument kind {kind!r}; kinds: {', '.join(sorted(self.kinds))}", 2)
        p = prefix.lower()
        return sorted(n for n in fn(ctx) if n.lower().startswith(p))[:limit]

    def help_text(self, topic: list[str] | None = None) -> Reply:
        cmds = sorted(self.commands.values(), key=lambda c: c.name)
        if topic:
            cmds = [c for c in cmds if c.name == " ".join(topic) or c.words[0] == topic[0]]
            if not cmds:
                raise AdminError(f"no command {' '.join(topic)!r}", 2)
        width = max((len(c.syntax) for c in cmds), default=0)
        lines = [f"{c.syntax.ljust(width)}  {c.help}" for c in cmds]
        return Reply("\n".join(lines), [dict(c.spec.as_dict(), owner=c.owner) for c in cmds])
