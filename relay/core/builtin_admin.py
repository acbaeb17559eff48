"""The built-in operator commands. Each handler is headed by its syntax line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from relay.core.accounts import AccountError
from relay.core.admin import AdminError, Reply
from relay.core.modules import ModuleError
from relay.core.storage import StorageError

if TYPE_CHECKING:
    from relay.core.server import Core

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass(slots=True)
class AdminContext:
    core: "Core"
    now: float
    peer: str = "control"
    # A command that changed stored state replies once it is committed (the runtime waits);
    # `flush` asks for that wait without changing anything.
    wait_for_commit: bool = False


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return str(n)


def cmd_status(ctx: AdminContext) -> Reply:
    """status"""
    s = ctx.core.status(ctx.now)
    conns = ", ".join(f"{p}={n}" for p, n in sorted(s["connections"].items())) or "none"
    lst = ", ".join(f"{l['proto']}{'+tls' if l.get('tls') else ''}@{l['host']}:{l['port']}"
                    for l in s["listeners"]) or "none"
    text = "\n".join([
        f"relaynet {s['version']} server {s['server']['name']} ({s['server']['id']}) pid {s['pid']}",
        f"uptime {s['uptime']:.0f}s, memory {_fmt_bytes(s['memory_rss'])}",
        f"listeners: {lst}",
        f"connections: {conns}" + (f" (open-files limit {s['open_files_limit']})"
                                   if s.get("open_files_limit") else ""),
        f"links: {', '.join(l['name'] for l in s['links']) or 'none'}",
        f"users: {s['users']['users']} ({s['users']['local']} local), channels: {s['users']['channels']}",
        f"modules: {', '.join(s['modules']) or 'none'}",
        f"storage: {s['storage']['backend']}, {s['storage']['accounts']} accounts, "
        f"{s['storage']['queued']} writes queued, {s['storage']['committed']} committed",
    ])
    return Reply(text, s)


def cmd_stop(ctx: AdminContext, *reason: str) -> Reply:
    """stop [REASON]"""
    msg = " ".join(reason) or "Server shutting down"
    if ctx.core.shutdown_requested is None:
        raise AdminError("this server cannot be stopped from here")
    ctx.core.shutdown_requested(msg)
    return Reply("stopping", {"stopping": True})


def cmd_register(ctx: AdminContext, user: str, password: str) -> Reply:
    """register USER PASSWORD"""
    try:
        ctx.core.register_account(user, password, ctx.now)
    except AccountError as e:
        raise AdminError(str(e)) from None
    return Reply(f"account {user} registered", {"account": user})


def cmd_unregister(ctx: AdminContext, user: str) -> Reply:
    """unregister USER"""
    try:
        ctx.core.unregister_account(user, ctx.now)
    except AccountError as e:
        raise AdminError(str(e)) from None
    return Reply(f"account {user} removed", {"account": user})


def cmd_passwd(ctx: AdminContext, user: str, password: str) -> Reply:
    """passwd USER PASSWORD"""
    try:
        ok = ctx.core.change_account(ctx.core.accounts.set_password(user, password, ctx.now))
    except AccountError as e:
        raise AdminError(str(e)) from None
    if not ok:
        raise AdminError(f"no account {user}")
    return Reply(f"password of {user} changed", {"account": user})


def cmd_accounts(ctx: AdminContext) -> Reply:
    """accounts"""
    names = ctx.core.accounts.names()
    return Reply("\n".join(names) or "no accounts", names)


def _rows(res: dict) -> str:
    return ", ".join(f"{t} {n}" for t, n in res.get("rows", {}).items()) or "no rows"


def cmd_backup(ctx: AdminContext, path: str) -> Reply:
    """backup FILE"""
    if ctx.core.storage.backup is None:
        raise AdminError("this server has no database to back up")
    try:
        res = ctx.core.storage.backup(path)
    except (StorageError, OSError) as e:
        raise AdminError(f"backup failed: {e}") from None
    return Reply(f"backup written to {res['file']}: {_rows(res)}", res)


def cmd_flush(ctx: AdminContext) -> Reply:
    """flush"""
    ctx.wait_for_commit = True
    q = ctx.core.storage.queue
    return Reply(f"storage flushed ({len(q)} writes were queued)", {"queued": len(q)})


def cmd_export(ctx: AdminContext, to: str, dsn: str) -> Reply:
    """export --to DSN"""
    if to != "--to":
        raise AdminError("usage: export --to DSN", 2)
    if ctx.core.storage.export is None:
        raise AdminError("this server has no database to export")
    try:
        res = ctx.core.storage.export(dsn)
    except StorageError as e:
        raise AdminError(f"export failed: {e}") from None
    return Reply(f"exported to {res['to']}: {_rows(res)}; set storage.backend: postgresql and storage.dsn, "
                 f"then restart", res)


def cmd_log_level(ctx: AdminContext, level: str) -> Reply:
    """log-level LEVEL"""
    level = level.lower()
    if level not in LOG_LEVELS:
        raise AdminError(f"log level must be one of {', '.join(LOG_LEVELS)}", 2)
    if ctx.core.set_log_level:
        ctx.core.set_log_level(level)
    return Reply(f"log level is now {level}", {"level": level})


def cmd_reload_config(ctx: AdminContext) -> Reply:
    """reload-config"""
    if ctx.core.reload_requested is None:
        raise AdminError("this server has no config file to reload")
    changed = ctx.core.reload_requested()
    return Reply("configuration reloaded" + (f": {', '.join(changed)}" if changed else ": nothing changed"),
                 {"changed": changed})


def cmd_help(ctx: AdminContext, *topic: str) -> Reply:
    """help [COMMAND]"""
    return ctx.core.admin.help_text(list(topic))


def cmd_module_list(ctx: AdminContext) -> Reply:
    """module list"""
    mods = ctx.core.modules.loaded
    data = [{"name": n, "registrations": m.registrations()} for n, m in sorted(mods.items())]
    return Reply("\n".join(n for n in sorted(mods)) or "no modules loaded", data)


def _module_call(fn, *args) -> Any:
    try:
        return fn(*args)
    except ModuleError as e:
        raise AdminError(str(e)) from None


def cmd_module_load(ctx: AdminContext, name: str) -> Reply:
    """module load NAME"""
    _module_call(ctx.core.modules.load, name, ctx.core.config.modules.get(name))
    return Reply(f"module {name} loaded", {"module": name})


def cmd_module_unload(ctx: AdminContext, name: str) -> Reply:
    """module unload NAME"""
    _module_call(ctx.core.modules.unload, name)
    return Reply(f"module {name} unloaded", {"module": name})


def cmd_module_reload(ctx: AdminContext, name: str) -> Reply:
    """module reload NAME"""
    _module_call(ctx.core.modules.reload, name)
    return Reply(f"module {name} reloaded", {"module": name})


def cmd_group_add(ctx: AdminContext, user: str, group: str) -> Reply:
    """group add USER GROUP"""
    if not ctx.core.change_account(ctx.core.accounts.add_group(user, group, ctx.now)):
        raise AdminError(f"no account {user}")
    return Reply(f"{user} is in group {group}", {"account": user, "group": group})


def cmd_group_remove(ctx: AdminContext, user: str, group: str) -> Reply:
    """group remove USER GROUP"""
    if not ctx.core.change_account(ctx.core.accounts.remove_group(user, group, ctx.now)):
        raise AdminError(f"{user} is not in group {group}")
    return Reply(f"{user} left group {group}", {"account": user, "group": group})


def cmd_group_list(ctx: AdminContext, user: str) -> Reply:
    """group list USER"""
    if ctx.core.accounts.get(user) is None:
        raise AdminError(f"no account {user}")
    groups = sorted(ctx.core.accounts.groups(user))
    return Reply(" ".join(groups) or f"{user} is in no group", groups)


def cmd_link(ctx: AdminContext, peer: str) -> Reply:
    """link PEER"""
    try:
        text = ctx.core.links.connect(peer, ctx.now)
    except (KeyError, RuntimeError) as e:
        raise AdminError(str(e).strip("'\"")) from None
    return Reply(text, {"peer": peer})


def cmd_unlink(ctx: AdminContext, peer: str, *reason: str) -> Reply:
    """unlink PEER [REASON]"""
    try:
        text = ctx.core.links.unlink(peer, " ".join(reason), ctx.now)
    except KeyError as e:
        raise AdminError(str(e).strip("'\"")) from None
    return Reply(text, {"peer": peer})


def cmd_map(ctx: AdminContext) -> Reply:
    """map"""
    lk = ctx.core.links
    return Reply(lk.map_text(ctx.now), lk.map_data(ctx.now))


def cmd_links(ctx: AdminContext) -> Reply:
    """links"""
    data = ctx.core.links.summary()
    lines = []
    for l in data:
        fin, fout = sum(l["frames_in"].values()), sum(l["frames_out"].values())
        lag = f"{l['lag'] * 1000:.1f}ms" if l["lag"] is not None else "?"
        lines.append(f"{l['name']} ({l['id']}) {l['role']} lag {lag} frames in {fin} out {fout}")
    return Reply("\n".join(lines) or "no links", data)


def cmd_dump_state(ctx: AdminContext, *flags: str) -> Reply:
    """dump-state [--digest]"""
    lk = ctx.core.links
    if "--digest" in flags:
        d = lk.digest()
        return Reply(d, {"digest": d})
    st = lk.state()
    import json
    return Reply(json.dumps(st, indent=1, sort_keys=True), st)


def cmd_kick(ctx: AdminContext, channel: str, nick: str, *reason: str) -> Reply:
    """kick CHANNEL NICK [REASON]"""
    net = ctx.core.net
    ch, u = net.find_channel(channel), net.find_nick(nick)
    if ch is None:
        raise AdminError(f"no channel {channel}")
    if u is None or u not in ch.members:
        raise AdminError(f"{nick} is not on {ch.name}")
    net.kick(ctx.core.config.server.name, ch, u, " ".join(reason) or "Kicked by an operator", ctx.now)
    return Reply(f"kicked {u.nick} from {ch.name}", {"channel": ch.name, "nick": u.nick})


# name, handler, min args, max args (None: any), help
BUILTIN_COMMANDS = [
    ("status", cmd_status, 0, 0, "version, uptime, listeners, connections, links, memory"),
    ("stop", cmd_stop, 0, None, "stop the server cleanly (tell peers, drain, close)"),
    ("register", cmd_register, 2, 2, "create an account usable from every protocol"),
    ("unregister", cmd_unregister, 1, 1, "delete an account"),
    ("passwd", cmd_passwd, 2, 2, "change an account's password"),
    ("accounts", cmd_accounts, 0, 0, "list accounts"),
    ("backup", cmd_backup, 1, 1, "write every store to FILE (a portable dump; `relayctl restore` reads it)"),
    ("flush", cmd_flush, 0, 0, "reply once every queued storage write is committed"),
    ("export", cmd_export, 2, 2, "copy this server's database onto PostgreSQL (then switch storage: to it)"),
    ("log-level", cmd_log_level, 1, 1, "change the log level at runtime"),
    ("reload-config", cmd_reload_config, 0, 0, "re-read the config file and apply what can change at runtime"),
    ("help", cmd_help, 0, 2, "list commands, or describe one"),
    ("module list", cmd_module_list, 0, 0, "list loaded modules"),
    ("module load", cmd_module_load, 1, 1, "load a module (options from the config's modules: section)"),
    ("module unload", cmd_module_unload, 1, 1, "unload a module and everything it registered"),
    ("module reload", cmd_module_reload, 1, 1, "reload a module's code, keeping its saved state"),
    ("group add", cmd_group_add, 2, 2, "put an account in a group (for acl: group matches)"),
    ("group remove", cmd_group_remove, 2, 2, "take an account out of a group"),
    ("group list", cmd_group_list, 1, 1, "list an account's groups"),
    ("kick", cmd_kick, 2, None, "remove a member from a channel, network-wide"),
    ("link", cmd_link, 1, 1, "connect to a peer of the links: section"),
    ("unlink", cmd_unlink, 1, None, "drop the link with a peer (and stop autoconnecting to it)"),
    ("map", cmd_map, 0, 0, "the server tree, with each link's lag and uptime"),
    ("links", cmd_links, 0, 0, "this server's links with frame and byte counters by type"),
    ("dump-state", cmd_dump_state, 0, 1, "the network state as this server sees it, or its --digest"),
]


def install(core: "Core") -> None:
    for name, fn, lo, hi, text in BUILTIN_COMMANDS:
        core.admin.add(name, fn, syntax=fn.__doc__.strip(), help=text, min_args=lo, max_args=hi)
