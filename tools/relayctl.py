"""relayctl: the operator's one entry point.

`start`, `stop`, `status` and `shell` are here; every other command is the
server's own operator command, sent over the control socket, so the shell and
the command line run exactly the same commands (modules add their own).
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time

import click

from relay.core import config as config_mod
from relay.core.builtin_admin import BUILTIN_COMMANDS
from relay.proto.control import ControlCodec

CONFIG_ENV = "RELAYNET_CONFIG"
LOCAL = ("start", "stop", "status", "shell", "mkpasswd", "verify", "backup", "restore")


class NotRunning(Exception):
    pass


def load_config(path: str | None):
    try:
        return config_mod.load(path)
    except config_mod.ConfigError as e:
        for line in e.errors:
            click.echo(f"config error: {line}", err=True)
        sys.exit(config_mod.EXIT_CONFIG_ERROR)


def control_call(cfg, argv: list[str], timeout: float = 30.0) -> dict:
    return control_request(str(cfg.control_path), argv, timeout)


def control_request(path: str, argv: list[str], timeout: float = 30.0) -> dict:
    """One operator command over the control socket at `path`: the server's reply."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        s.close()
        raise NotRunning(f"relaynet is not running (no server answers on {path})") from None
    except PermissionError:
        s.close()
        owner = os.stat(os.path.dirname(path)).st_uid if os.path.exists(os.path.dirname(path)) else "?"
        raise PermissionError(f"permission denied: the control socket {path} belongs to uid {owner}") from None
    codec = ControlCodec()
    try:
        s.sendall(codec.send({"argv": argv}))
        while True:
            data = s.recv(65536)
            if not data:
                return {"ok": False, "status": 1, "text": "the server closed the control connection"}
            replies = codec.receive_data(data)
            if replies:
                return replies[0]
    finally:
        s.close()


def reach(cfg, argv: list[str]) -> dict:
    """control_call, or one line on stderr and a non-zero exit when the server cannot be reached."""
    try:
        return control_call(cfg, argv)
    except NotRunning as e:
        click.echo(str(e), err=True)
        sys.exit(1)
    except PermissionError as e:
        click.echo(str(e), err=True)
        sys.exit(77)


def call_or_exit(cfg, argv: list[str], as_json: bool = False) -> dict:
    r = reach(cfg, argv)
    show(r, as_json)
    if not r.get("ok"):
        sys.exit(r.get("status") or 1)
    return r


def show(r: dict, as_json: bool) -> None:
    if as_json and r.get("ok"):
        click.echo(json.dumps(r.get("data"), indent=2, sort_keys=True))
    elif r.get("text"):
        click.echo(r["text"], err=not r.get("ok"))


config_option = click.option("-c", "--config", "config_path", envvar=CONFIG_ENV, type=click.Path(dir_okay=False),
                             help="server config file (default: the built-in configuration)")


class Relayctl(click.Group):
    """Local commands, plus every operator command the server knows (forwarded)."""

    def list_commands(self, ctx):
        words = sorted({name.split()[0] for name, *_ in BUILTIN_COMMANDS} | set(LOCAL) | {
            "link", "unlink", "map", "links", "dump-state", "verify"})
        return words

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is not None:
            return cmd
        return remote_command(name)


def remote_command(name: str) -> click.Command:
    helps = {n: h for n, _f, _lo, _hi, h in BUILTIN_COMMANDS}
    sub = sorted(n for n in helps if n.split()[0] == name and " " in n)
    text = helps.get(name) or ("; ".join(f"{n}: {helps[n]}" for n in sub) if sub else
                               "operator command of the running server (see `relayctl help`)")

    @click.command(name=name, help=text, context_settings={"ignore_unknown_options": True,
                                                           "allow_interspersed_args": False})
    @config_option
    @click.option("--json", "as_json", is_flag=True, help="print the reply as JSON")
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def run(config_path, as_json, args):
        cfg = load_config(config_path)
        call_or_exit(cfg, [name, *args], as_json)
    return run


@click.group(cls=Relayctl, context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Operate a relaynet server."""


@main.command()
@config_option
@click.option("--detach", is_flag=True, help="run in the background; return once the server is listening")
def start(config_path, detach):
    """Start a server (in the foreground unless --detach)."""
    cfg = load_config(config_path)
    if not detach:
        from relay.runtime.server import run
        sys.exit(run(cfg, config_path, foreground=True))
    try:
        control_call(cfg, ["status"], timeout=2)
        click.echo(f"relaynet is already running (control socket {cfg.control_path})", err=True)
        sys.exit(1)
    except NotRunning:
        pass
    r, w = os.pipe()
    cmd = [sys.executable, "-m", "relay.runtime.daemon", os.path.abspath(config_path) if config_path else "-", str(w)]
    proc = subprocess.Popen(cmd, pass_fds=(w,), start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        msg = f.read().decode().strip()  # EOF comes with the message, or when the child dies
    if msg == "ready":
        click.echo(f"relaynet started: server {cfg.server.name}, pid {proc.pid}")
        return
    proc.wait(timeout=10)
    if msg.startswith("error "):
        _, status, text = msg.split(" ", 2)
        for line in text.splitlines():
            click.echo(f"cannot start: {line}", err=True)
        sys.exit(int(status))
    click.echo(f"cannot start: the server exited with status {proc.returncode}; see {cfg.data_path / cfg.log.file}",
               err=True)
    sys.exit(proc.returncode or 1)


@main.command()
@config_option
@click.option("--timeout", default=30.0, show_default=True, help="seconds to wait for the server to exit")
@click.argument("reason", nargs=-1)
def stop(config_path, timeout, reason):
    """Stop the server cleanly."""
    cfg = load_config(config_path)
    pid = _read_pid(cfg)
    call_or_exit(cfg, ["stop", *reason])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (pid is None or not _alive(pid)) and not cfg.control_path.exists():
            click.echo("stopped")
            return
        time.sleep(0.05)
    click.echo(f"the server (pid {pid}) did not exit within {timeout:.0f}s", err=True)
    sys.exit(1)


def _read_pid(cfg) -> int | None:
    try:
        return int(cfg.pid_path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except OSError:
        return False


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="print the status as JSON")
def status(config_path, as_json):
    """Version, uptime, listeners, connections per protocol, links, memory."""
    cfg = load_config(config_path)
    call_or_exit(cfg, ["status"], as_json)


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--timeout", default=5.0, show_default=True, help="seconds to wait for every server's answer")
def verify(config_path, as_json, timeout):
    """Compare this server's state digest with every server's; exit 3 if any differs."""
    cfg = load_config(config_path)
    started = _quiet_call(cfg, ["verify", "start"])
    rid = str(started["data"]["round"])
    deadline = time.monotonic() + timeout
    while True:
        r = _quiet_call(cfg, ["verify", "result", rid])
        if r["data"]["complete"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    show(r, as_json)
    d = r["data"]
    sys.exit(0 if d["converged"] else (3 if d["complete"] else 4))


def _quiet_call(cfg, argv):
    r = reach(cfg, argv)
    if r.get("status") not in (0, 3):
        show(r, False)
        sys.exit(r.get("status") or 1)
    return r


@main.command()
@config_option
@click.argument("file", type=click.Path(dir_okay=False))
def backup(config_path, file):
    """Write the running server's stores to FILE (portable JSON lines, either backend)."""
    cfg = load_config(config_path)
    call_or_exit(cfg, ["backup", os.path.abspath(file)])


@main.command()
@config_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def restore(config_path, file):
    """Replace the stores of a stopped server's database with FILE (made by `relayctl backup`)."""
    cfg = load_config(config_path)
    try:
        control_call(cfg, ["status"], timeout=2)
        click.echo("cannot restore: the server is running; stop it first", err=True)
        sys.exit(1)
    except NotRunning:
        pass
    from bridges.mqtt.store import SCHEMA as MQTT
    from relay.core.accounts import SCHEMA as ACCOUNTS
    from relay.core.storage import StorageError
    from relay.storage import dump, open_database
    try:
        db = open_database(cfg)
        try:
            res = dump.load_dump(db, [ACCOUNTS, MQTT], os.path.abspath(file))
        finally:
            db.close()
    except StorageError as e:
        click.echo(f"cannot restore: {e}", err=True)
        sys.exit(1)
    click.echo(f"restored {file}: " + (", ".join(f"{t} {n}" for t, n in res["rows"].items()) or "no rows"))


@main.command()
@click.argument("password")
def mkpasswd(password):
    """Hash a password for an oper block (irc.opers[].password)."""
    from relay.core.irc.commands import hash_oper_password
    click.echo(hash_oper_password(password, os.urandom(16)))


@main.command()
@config_option
def shell(config_path):
    """An interactive shell on the running server (history, completion, help)."""
    cfg = load_config(config_path)
    helpdata = reach(cfg, ["help"]).get("data") or []
    words = sorted({w for c in helpdata for w in c["name"].split()} | {"exit", "quit"})
    interactive = sys.stdin.isatty()
    if interactive:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.completion import WordCompleter
        from prompt_toolkit.history import FileHistory
        hist = os.path.expanduser("~/.relayctl_history")
        session = PromptSession(history=FileHistory(hist), completer=WordCompleter(words))
        prompt = f"{cfg.server.name}> "
        read = lambda: session.prompt(prompt)  # noqa: E731
    else:
        read = lambda: _read_stdin_line()  # noqa: E731
    failures = 0
    while True:
        try:
            line = read()
        except (EOFError, KeyboardInterrupt):
            break
        try:
            argv = shlex.split(line)
        except ValueError as e:
            click.echo(f"error: {e}", err=True)
            continue
        if not argv:
            continue
        if argv[0] in ("exit", "quit"):
            break
        as_json = "--json" in argv
        argv = [a for a in argv if a != "--json"]
        r = reach(cfg, argv)
        show(r, as_json)
        failures += not r.get("ok")
    sys.exit(1 if failures and not interactive else 0)


def _read_stdin_line() -> str:
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line


if __name__ == "__main__":
    main()
