"""relayctl shell: the server's operator commands, one per line, with Tab completion in context.

The completer walks the server's command table (`help` data): first the command's
words (`module` -> list, load, unload, reload), then each argument by its kind,
whose names the server lists (`complete KIND PREFIX`: loaded modules for unload,
available ones for load, accounts, channels, peers...).
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Callable, Iterable

import click
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

SHELL_WORDS = {"exit": "leave the shell", "quit": "leave the shell"}
SHELL_FLAGS = {"--json": "print the reply as JSON"}


class CommandCompleter(Completer):
    """Completion from a command table (dicts with name, help, args) and a names(kind, prefix) source."""

    def __init__(self, commands: list[dict], names: Callable[[str, str], list[str]]):
        self.commands = commands
        self.names = names

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        text = document.text_before_cursor
        words = text.split()
        partial = "" if not text or text[-1].isspace() else words.pop()
        for word, meta in self.candidates(words, partial):
            # The space lets the next Tab go on to the next word (a shared prefix stops before it).
            yield Completion(word + " ", start_position=-len(partial), display=word, display_meta=meta)

    def candidates(self, words: list[str], partial: str) -> list[tuple[str, str]]:
        """(word, description) pairs that could replace `partial` after `words`."""
        if partial.startswith("-") and words:
            found = dict(SHELL_FLAGS)
        else:
            words = [w for w in words if w not in SHELL_FLAGS]
            found = dict(self._command_words(words))
            if not words:
                found.update(SHELL_WORDS)
            found.update(self._argument(words, partial))
        return sorted((w, m) for w, m in found.items() if w.lower().startswith(partial.lower()))

    def _command_words(self, words: list[str]) -> dict[str, str]:
        """The next word of every command that starts with `words`."""
        out: dict[str, str] = {}
        n = len(words)
        for c in self.commands:
            cw = c["name"].split()
            if len(cw) > n and cw[:n] == words:
                out.setdefault(cw[n], c["help"] if len(cw) == n + 1 else f"{cw[n]} ...")
        return out

    def _argument(self, words: list[str], partial: str) -> dict[str, str]:
        cmd = max((c for c in self.commands if words[:len(c["name"].split())] == c["name"].split()),
                  key=lambda c: len(c["name"].split()), default=None)
        if cmd is None:
            return {}
        done = words[len(cmd["name"].split()):]
        if cmd["name"] == "help":  # help takes a command's words
            return self._command_words(done)
        args = cmd.get("args") or []
        if len(done) < len(args):
            arg = args[len(done)]
        elif args and args[-1]["rest"]:
            arg = args[-1]
        else:
            return {}
        if arg["kind"] == "literal":
            return {arg["name"]: cmd["help"]}
        if not arg["kind"]:
            return {}
        return {n: arg["name"] for n in self.names(arg["kind"], partial)}


class ServerNames:
    """names(kind, prefix) from the server's `complete` command, remembered until the next command."""

    def __init__(self, ask: Callable[[list[str]], dict | None]):
        self.ask = ask
        self.cache: dict[tuple[str, str], list[str]] = {}

    def __call__(self, kind: str, prefix: str) -> list[str]:
        key = (kind, prefix)
        if key not in self.cache:
            r = self.ask(["complete", kind, prefix])
            self.cache[key] = list(r.get("data") or []) if r and r.get("ok") else []
        return self.cache[key]

    def forget(self) -> None:
        self.cache.clear()


def run_shell(cfg) -> int:
    """The shell's loop: 0 when left, 1 when a scripted (non-tty) run had a failed command."""
    from tools.relayctl import NoAnswer, NotRunning, control_call, reach, show

    def ask(argv: list[str]) -> dict | None:  # for completion: quiet, never exits
        try:
            return control_call(cfg, argv, timeout=2.0)
        except (NotRunning, NoAnswer, PermissionError):
            return None

    table = reach(cfg, ["help"]).get("data") or []
    interactive = sys.stdin.isatty()
    names = ServerNames(ask)
    completer = CommandCompleter(table, names)
    if interactive:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory
        st = reach(cfg, ["status"]).get("data") or {}
        click.echo(f"relaynet {st.get('version', '?')} on {st.get('server', {}).get('name', cfg.server.name)}: "
                   "'help' lists commands, Tab completes, Ctrl-D leaves")
        session = PromptSession(history=FileHistory(os.path.expanduser("~/.relayctl_history")),
                                completer=completer, complete_while_typing=False)
        read_line = lambda: session.prompt(f"{cfg.server.name}> ")  # noqa: E731
    else:
        read_line = _read_stdin_line
    failures = 0
    while True:
        try:
            line = read_line()
        except KeyboardInterrupt:
            if interactive:  # Ctrl-C drops the line being typed; Ctrl-D leaves
                continue
            break
        except EOFError:
            break
        try:
            argv = shlex.split(line)
        except ValueError as e:
            click.echo(f"error: {e}", err=True)
            continue
        if not argv:
            continue
        if argv[0] in SHELL_WORDS:
            break
        as_json = "--json" in argv
        argv = [a for a in argv if a != "--json"]
        try:
            r = control_call(cfg, argv)
        except NoAnswer as e:
            click.echo(str(e), err=True)
            failures += 1
            continue
        except (NotRunning, PermissionError) as e:
            click.echo(str(e), err=True)
            return 1
        show(r, as_json)
        failures += not r.get("ok")
        names.forget()
        if argv[0] == "module" and r.get("ok"):  # modules add and remove commands
            completer.commands = reach(cfg, ["help"]).get("data") or table
    return 1 if failures and not interactive else 0


def _read_stdin_line() -> str:
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line
