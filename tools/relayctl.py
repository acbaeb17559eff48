"""relayctl: the operator's one entry point.

`start`, `stop`, `status`, `verify`, `shell` and `mkpasswd` run here; every other
command is the server's own operator command, sent over the control socket, so
the shell and the command line run exactly the same commands. Which commands
exist comes from the server's command table: the built-in ones and those that
the modules that ship declare (read without a server), plus, for `-h`, whatever
a running server adds. `-c CONFIG` goes before or after any command.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import click

from relay.core import config as config_mod
from relay.core.admin import CommandSpec, specs_of
from relay.core.builtin_admin import builtin_specs
from relay.core.modules import CORE_MODULES, declared_commands, shipped_modules
from relay.proto.control import ControlCodec

CONFIG_ENV = "RELAYNET_CONFIG"
TIMEOUT_ENV = "RELAYNET_TIMEOUT"
EXIT_NO_ANSWER = 75  # EX_TEMPFAIL: the server may be busy; the command may have run

# The commands relayctl runs itself, with their syntax for -h.
LOCAL = {
    "start": "start [--detach]",
    "stop": "stop [--timeout S] [REASON...]",
    "status": "status [--json]",
    "verify": "verify [--json] [--timeout S]",
    "shell": "shell",
    "mkpasswd": "mkpasswd PASSWORD",
    "backup": "backup FILE",
    "restore": "restore FILE",
}


class NotRunning(Exception):
    pass


class NoAnswer(Exception):
    pass


def load_config(path: str | None):
    try:
        return config_mod.load(path)
    except config_mod.ConfigError as e:
        for line in e.errors:
            click.echo(f"config error: {line}", err=True)
        sys.exit(config_mod.EXIT_CONFIG_ERROR)


def control_call(cfg, argv: list[str], timeout: float | None = None) -> dict:
    return control_request(str(cfg.control_path), argv, reply_timeout() if timeout is None else timeout)


def control_request(path: str, argv: list[str], timeout: float = 30.0) -> dict:
    """One operator command over the control socket at `path`: the server's reply.

    NotRunning when no server listens there, NoAnswer when one does but does not reply in time."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except FileNotFoundError:
        s.close()
        raise NotRunning(f"relaynet is not running (no control socket at {path})") from None
    except ConnectionRefusedError:
        s.close()
        raise NotRunning(f"relaynet is not running (nothing listens on the control socket {path})") from None
    except PermissionError:
        s.close()
        owner = os.stat(os.path.dirname(path)).st_uid if os.path.exists(os.path.dirname(path)) else "?"
        raise PermissionError(f"permission denied: the control socket {path} belongs to uid {owner}") from None
    except TimeoutError:
        s.close()
        raise NoAnswer(f"the server on {path} did not accept the connection within {timeout:g}s "
                       "(busy or hung); the command was not sent") from None
    codec = ControlCodec()
    try:
        s.sendall(codec.send({"argv": argv}))
        while True:
            data = s.recv(65536)
            if not data:
                raise NoAnswer(f"the server on {path} closed the connection without a reply; "
                               "the command may still have run")
            replies = codec.receive_data(data)
            if replies:
                return replies[0]
    except TimeoutError:
        raise NoAnswer(f"no reply from the server on {path} within {timeout:g}s (busy or hung); "
                       "the command may still have run") from None
    except OSError as e:
        raise NoAnswer(f"the control connection to {path} failed ({e.strerror or e}); "
                       "the command may still have run") from None
    finally:
        s.close()


def reach(cfg, argv: list[str]) -> dict:
    """control_call, or one line on stderr and a non-zero exit when the server cannot be reached."""
    try:
        return control_call(cfg, argv)
    except NotRunning as e:
        click.echo(str(e), err=True)
        sys.exit(1)
    except NoAnswer as e:
        click.echo(str(e), err=True)
        sys.exit(EXIT_NO_ANSWER)
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


# ------------------------------------------------------------------ options: -c and --timeout anywhere
# The group's -c reads RELAYNET_CONFIG; a command's own -c (after its name) wins over both.
def _timeout_type(value):
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise click.BadParameter(f"{value!r} is not a number of seconds") from None
    if t <= 0:
        raise click.BadParameter("must be more than 0 seconds")
    return t


def command_config_option(f):
    return click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), default=None,
                        help=f"server config file (or ${CONFIG_ENV}; default: the built-in configuration)")(f)


def resolve_config(local: str | None) -> str | None:
    """The -c after the command, else the one before it (or $RELAYNET_CONFIG), else None (built-in)."""
    root = click.get_current_context().find_root()
    return local or root.params.get("config_path")


def reply_timeout() -> float:
    ctx = click.get_current_context(silent=True)
    local = ctx.params.get("reply_timeout") if ctx is not None else None
    root = ctx.find_root().params.get("reply_timeout") if ctx is not None else None
    return local or root or 30.0


# ------------------------------------------------------------------ the command table, offline and live
def module_specs() -> dict[str, list[CommandSpec]]:
    """The operator commands of every module that ships, by module, from their static declarations."""
    out = {}
    for name, source in shipped_modules().items():
        try:
            specs = specs_of(declared_commands(source))
        except ValueError:
            continue  # a malformed declaration: the module itself refuses to load and says why
        if specs:
            out[name] = specs
    return out


def known_specs() -> list[CommandSpec]:
    return builtin_specs() + [s for specs in module_specs().values() for s in specs]


def _config_in_argv(argv: list[str]) -> str | None:
    """-c's value in a command line that click has not parsed yet (-h acts before -c is read)."""
    for i, a in enumerate(argv):
        if a == "--":
            break
        if a in ("-c", "--config") and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
        if a.startswith("-c") and len(a) > 2 and not a.startswith("--"):
            return a[2:]
    return None


def live_specs(ctx) -> list[dict]:
    """The running server's table (for -h), if one answers at once; [] otherwise."""
    path = (ctx.find_root().params.get("config_path") or _config_in_argv(sys.argv[1:])
            or os.environ.get(CONFIG_ENV))
    try:
        cfg = config_mod.load(path)
        r = control_request(str(cfg.control_path), ["help"], timeout=1.0)
    except Exception:
        return []
    return r.get("data") or [] if r.get("ok") else []


class RemoteCommand(click.Command):
    """One first word of the server's table (`module`, `mqtt`, `register`): forwards its words."""

    def __init__(self, word: str, specs: list[CommandSpec]):
        self.specs = specs
        if not specs:
            text = "an operator command of the running server (`relayctl help` lists them)"
        elif len(specs) == 1:
            text = specs[0].help
        else:
            text = "; ".join(f"{s.name}: {s.help}" for s in specs)
        super().__init__(word, callback=self.forward, help=text, short_help=text, params=[
            click.Argument(["args"], nargs=-1, type=click.UNPROCESSED),
            click.Option(["-c", "--config", "config_path"], type=click.Path(dir_okay=False),
                         help=f"server config file (or ${CONFIG_ENV})"),
            click.Option(["--json", "as_json"], is_flag=True, help="print the reply as JSON"),
            click.Option(["--timeout", "reply_timeout"], type=_timeout_type, metavar="S",
                         help=f"seconds to wait for the reply (or ${TIMEOUT_ENV}; default 30)"),
        ], context_settings={"ignore_unknown_options": True, "allow_interspersed_args": True,
                             "help_option_names": ["-h", "--help"]})

    def format_usage(self, ctx, formatter):
        for i, syntax in enumerate([s.syntax for s in self.specs] or [f"{self.name} [ARGS]..."]):
            formatter.write_usage("relayctl", f"{syntax} [-c CONFIG] [--json]",
                                  prefix="Usage: " if i == 0 else "       ")

    def format_help_text(self, ctx, formatter):
        if len(self.specs) > 1:
            formatter.write_paragraph()
            with formatter.indentation():
                formatter.write_dl([(s.syntax, s.help) for s in self.specs])
        else:
            super().format_help_text(ctx, formatter)

    def forward(self, args, config_path, as_json, reply_timeout):  # reply_timeout: read by control_call
        cfg = load_config(resolve_config(config_path))
        call_or_exit(cfg, [self.name, *args], as_json)


class Relayctl(click.Group):
    """Local commands, plus every operator command of the server's table (forwarded)."""

    def list_commands(self, ctx):
        return sorted(set(LOCAL) | {s.words[0] for s in known_specs()})

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is not None:
            return cmd
        return RemoteCommand(name, [s for s in known_specs() if s.words[0] == name])

    def format_commands(self, ctx, formatter):
        # Full syntax lines and help texts, never cut (click's listing shortens them).
        sections = [("Commands relayctl runs itself",
                     [(LOCAL[n], (self.commands[n].help or "").split("\n")[0]) for n in LOCAL])]
        shown = set(LOCAL)
        server = [s for s in builtin_specs() if s.name not in shown]
        sections.append(("Server commands (sent to the running server)", [(s.syntax, s.help) for s in server]))
        shown |= {s.name for s in server}
        for module, specs in module_specs().items():
            rows = [(s.syntax, s.help) for s in specs if s.name not in shown]
            shown |= {s.name for s in specs}
            when = "a core module, always loaded" if module in CORE_MODULES else "when it is loaded"
            sections.append((f"Commands of module {module} ({when})", rows))
        extra = [(c["syntax"], c["help"]) for c in live_specs(ctx) if c.get("name") not in shown]
        sections.append(("More commands of the running server", extra))
        for title, rows in sections:
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows, col_max=34)


@click.group(cls=Relayctl, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120})
@click.option("-c", "--config", "config_path", envvar=CONFIG_ENV, type=click.Path(dir_okay=False),
              help=f"server config file (or ${CONFIG_ENV}); default: the built-in configuration. "
                   "May also follow the command.")
@click.option("--timeout", "reply_timeout", envvar=TIMEOUT_ENV, type=_timeout_type, metavar="S",
              help=f"seconds to wait for the server's reply (or ${TIMEOUT_ENV}; default 30)")
def main(config_path, reply_timeout):
    """Operate a relaynet server.

    Every command takes -c CONFIG, before or after the command's name. A word
    that would be read as one of relayctl's options (-c, -h, --json, --timeout)
    goes after '--'. `relayctl help` lists the running server's commands,
    `relayctl COMMAND -h` describes one.
    """


@main.command()
@command_config_option
@click.option("--detach", is_flag=True, help="run in the background; return once the server is listening")
def start(config_path, detach):
    """Start a server (in the foreground unless --detach)."""
    config_path = resolve_config(config_path)
    cfg = load_config(config_path)
    if not detach:
        from relay.runtime.server import run
        sys.exit(run(cfg, config_path, foreground=True))
    try:
        control_call(cfg, ["status"], timeout=2)
        click.echo(f"relaynet is already running (control socket {cfg.control_path})", err=True)
        sys.exit(1)
    except NoAnswer:
        click.echo(f"a server already holds the control socket {cfg.control_path} but does not answer", err=True)
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
@command_config_option
@click.option("--timeout", default=30.0, show_default=True, help="seconds to wait for the server to exit")
@click.argument("reason", nargs=-1)
def stop(config_path, timeout, reason):
    """Stop the server cleanly."""
    cfg = load_config(resolve_config(config_path))
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
@command_config_option
@click.option("--json", "as_json", is_flag=True, help="print the status as JSON")
def status(config_path, as_json):
    """Version, uptime, listeners, connections per protocol, links, memory."""
    cfg = load_config(resolve_config(config_path))
    call_or_exit(cfg, ["status"], as_json)


@main.command(context_settings={"ignore_unknown_options": True})
@command_config_option
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--timeout", default=5.0, show_default=True, help="seconds to wait for every server's answer")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def verify(config_path, as_json, timeout, args):
    """Compare this server's state digest with every server's; exit 3 if any differs."""
    cfg = load_config(resolve_config(config_path))
    if args:  # `verify start`, `verify result ROUND`: the server's own commands
        call_or_exit(cfg, ["verify", *args], as_json)
        return
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
@command_config_option
@click.argument("file", type=click.Path(dir_okay=False))
def backup(config_path, file):
    """Write the running server's stores to FILE (portable JSON lines, either backend)."""
    cfg = load_config(resolve_config(config_path))
    call_or_exit(cfg, ["backup", os.path.abspath(file)])


@main.command()
@command_config_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def restore(config_path, file):
    """Replace the stores of a stopped server's database with FILE (made by `relayctl backup`)."""
    cfg = load_config(resolve_config(config_path))
    try:
        control_call(cfg, ["status"], timeout=2)
        click.echo("cannot restore: the server is running; stop it first", err=True)
        sys.exit(1)
    except NotRunning:
        pass
    from relay.core.accounts import SCHEMA as ACCOUNTS
    from relay.core.module_names import ModuleError, import_module, shipped
    from relay.core.storage import StorageError
    from relay.storage import dump, open_database
    schemas = {ACCOUNTS.name: ACCOUNTS}
    for name in {*shipped(), *cfg.modules}:     # the stores each module declares (`SCHEMAS`)
        try:
            schemas.update((s.name, s) for s in getattr(import_module(name), "SCHEMAS", ()))
        except ModuleError:
            pass
    try:
        db = open_database(cfg)
        try:
            res = dump.load_dump(db, list(schemas.values()), os.path.abspath(file))
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
    from relay.core.passwords import hash_password as hash_oper_password
    click.echo(hash_oper_password(password, os.urandom(16)))


@main.command()
@command_config_option
def shell(config_path):
    """An interactive shell on the running server (history, Tab completion, help)."""
    from tools.shell import run_shell
    cfg = load_config(resolve_config(config_path))
    sys.exit(run_shell(cfg))


if __name__ == "__main__":
    main()
