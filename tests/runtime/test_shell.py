"""relayctl shell: completion in context (as a unit, from prompt_toolkit Documents), and once under a pty."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time

import pyte
import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from support import RELAYCTL, relayctl

from relay import __version__
from tools.relayctl import known_specs
from tools.shell import CommandCompleter, ServerNames

NAMES = {
    "module-loaded": ["netsplit", "welcome"],
    "module-available": ["filter", "mqtt"],
    "account": ["alice", "carol", "cecil"],
    "channel": ["#lobby", "#ops"],
    "nick": ["alice", "bob"],
    "peer": ["b.relay.test", "c.relay.test"],
    "linked-peer": ["b.relay.test"],
    "log-level": ["debug", "info", "warning", "error", "critical"],
}


def names(kind, prefix):
    return [n for n in NAMES.get(kind, []) if n.lower().startswith(prefix.lower())]


@pytest.fixture
def completer():
    return CommandCompleter([s.as_dict() for s in known_specs()], names)


def complete(completer, text):
    doc = Document(text, len(text))
    return [c.text.rstrip(" ") for c in completer.get_completions(doc, CompleteEvent(completion_requested=True))]


@pytest.mark.parametrize("text, expected", [
    ("module ", ["list", "load", "reload", "unload"]),
    ("module re", ["reload"]),
    ("module unload ", ["netsplit", "welcome"]),          # loaded modules
    ("module reload w", ["welcome"]),
    ("module load ", ["filter", "mqtt"]),                  # modules that could be loaded
    ("module load mq", ["mqtt"]),
    ("module load mqtt ", []),                             # takes one name
    ("mo", ["module"]),
    ("mqtt ", ["sessions", "stats"]),
    ("group ", ["add", "list", "remove"]),
    ("group add ", ["alice", "carol", "cecil"]),
    ("group add alice ", []),                              # a group: free text
    ("passwd c", ["carol", "cecil"]),
    ("register ", []),                                     # a new account: no existing names
    ("link ", ["b.relay.test", "c.relay.test"]),
    ("unlink ", ["b.relay.test"]),                         # only linked peers
    ("unlink b.relay.test ", []),                          # the reason
    ("kick ", ["#lobby", "#ops"]),
    ("kick #ops ", ["alice", "bob"]),
    ("kick #ops bob ", []),
    ("log-level w", ["warning"]),
    ("dump-state ", ["--digest"]),
    ("help ", None),                                       # every first word, checked below
    ("help mod", ["module"]),
    ("help module ", ["list", "load", "reload", "unload"]),
    ("status --j", ["--json"]),
    ("ex", ["exit", "export"]),
    ("frobnicate ", []),
])
def test_completion_walks_command_words_then_argument_kinds(completer, text, expected):
    got = complete(completer, text)
    if expected is None:
        firsts = sorted({s.name.split()[0] for s in known_specs()})
        assert got == firsts
    else:
        assert got == expected


def test_an_empty_line_offers_every_command_and_the_shell_words(completer):
    got = complete(completer, "")
    assert {"module", "mqtt", "netsplit", "register", "status", "exit", "quit"} <= set(got)
    assert len(got) == len(set(got))


def test_completions_replace_the_word_being_typed_and_describe_commands(completer):
    doc = Document("module unl", 10)
    [c] = completer.get_completions(doc, CompleteEvent(completion_requested=True))
    assert (c.text, c.start_position, c.display_text) == ("unload ", -3, "unload")
    assert "unload a module" in c.display_meta_text
    [c] = completer.get_completions(Document("module unload ne", 16), CompleteEvent())
    assert (c.text, c.start_position, c.display_meta_text) == ("netsplit ", -2, "NAME")


def test_the_commands_a_module_adds_are_completed_once_the_table_says_so():
    table = [s.as_dict() for s in known_specs()]
    c = CommandCompleter([t for t in table if not t["name"].startswith("mqtt")], names)
    assert complete(c, "mq") == []
    c.commands = table
    assert complete(c, "mq") == ["mqtt"]


def test_server_names_are_asked_once_per_kind_and_prefix_until_the_next_command():
    asked = []

    def ask(argv):
        asked.append(argv)
        return {"ok": True, "data": ["netsplit"]}
    n = ServerNames(ask)
    assert n("module-loaded", "") == ["netsplit"] and n("module-loaded", "") == ["netsplit"]
    assert asked == [["complete", "module-loaded", ""]]
    n.forget()
    n("module-loaded", "")
    assert len(asked) == 2
    assert ServerNames(lambda argv: None)("account", "") == []  # no server: nothing to offer, no error


class Pty:
    """relayctl under a pseudo-terminal, rendered by a terminal emulator: what a person sees."""

    def __init__(self, *args, env, columns: int = 100, lines: int = 30):
        self.master, slave = pty.openpty()
        import fcntl
        import struct
        import termios
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
        self.proc = subprocess.Popen([RELAYCTL, *args], stdin=slave, stdout=slave, stderr=slave, env=env,
                                     close_fds=True, start_new_session=True)
        os.close(slave)
        self.screen = pyte.Screen(columns, lines)
        self.stream = pyte.ByteStream(self.screen)

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def read_until(self, needle: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {needle!r} on the terminal; it shows:\n{self.text()}")
            if select.select([self.master], [], [], min(left, 0.5))[0]:
                try:
                    self.stream.feed(os.read(self.master, 65536))
                except OSError:  # the child closed the terminal
                    if self.proc.poll() is not None:
                        raise AssertionError(f"relayctl exited; the terminal shows:\n{self.text()}") from None
        return self.text()

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        os.close(self.master)


def test_the_shell_under_a_terminal_hints_completes_and_leaves_on_ctrl_d(make_server, tmp_path):
    srv = make_server()
    srv.ctl("register", "zelda", "pw")
    env = dict(os.environ, HOME=str(tmp_path), TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1", COLUMNS="100", LINES="30")
    term = Pty("shell", "-c", str(srv.path), env=env)
    try:
        term.read_until(f"relaynet {__version__} on test.relay.local: 'help' lists commands, Tab completes, "
                        "Ctrl-D leaves")
        term.read_until("test.relay.local>")
        # "module " + Tab: the menu of its words, with their descriptions; Ctrl-C drops the line.
        term.type("module \t")
        screen = term.read_until("unload a module")
        assert all(w in screen for w in ("list loaded modules", "load a module", "reload a module's code"))
        term.type("\x03")
        term.read_until("> module\ntest.relay.local>")
        # "module unl" + Tab completes the word; "n" + Tab completes a loaded module (irc, mqtt, netsplit).
        term.type("module unl\t")
        term.read_until("> module unload")
        term.type("n\t")
        term.read_until("module unload netsplit")
        term.type("\r")
        term.read_until("netsplit is a core module")
        # An account name from the server.
        term.type("group list ze\t")
        term.read_until("group list zelda")
        term.type("\r")
        term.read_until("zelda is in no group")
        term.type("\x04")  # Ctrl-D
        assert term.proc.wait(timeout=10) == 0
    finally:
        term.close()
    assert "zelda" in srv.ctl("accounts").stdout  # the server is fine
    assert (tmp_path / ".relayctl_history").read_text().count("group list zelda") == 1


def test_the_shell_from_a_pipe_prints_no_hint(make_server):
    srv = make_server()
    r = relayctl("shell", "-c", str(srv.path), input="accounts\n")
    assert "Tab completes" not in r.stdout + r.stderr and r.stdout.strip() == "no accounts"
