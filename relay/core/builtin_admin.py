"""The built-in operator commands. Each handler is headed by its syntax line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from relay.core.accounts import AccountError
from relay.core.admin import AdminError, CommandSpec, Reply, parse_syntax
from relay.core.modules import ModuleError, shipped_modules
from relay.core.storage import StorageError

if TYPE_CHECKING:
    from relay.core.interfaces import CoreServices

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass(slots=True)
class AdminContext:
    core: "CoreServices"
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
    lst = ", ".join(f"{l['proto']}{'+tls' if l.get('tls') else ''}{'/udp' if l.get('transport') == 'udp' else ''}"
                    f"@{l['host']}:{l['port']}"
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
    """stop [REASON...]"""
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
    """help [COMMAND...]"""
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
    mod = _module_call(ctx.core.modules.load, name, ctx.core.config.modules.get(name))
    return Reply("\n".join([f"module {name} loaded", *mod.notes]), {"module": name, "notes": mod.notes})


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
    """unlink PEER [REASON...]"""
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
    """kick CHANNEL NICK [REASON...]"""
    net = ctx.core.net
    ch, u = net.find_channel(channel), net.find_nick(nick)
    if ch is None:
        raise AdminError(f"no channel {channel}")
    if u is None or u not in ch.members:
        raise AdminError(f"{nick} is not on {ch.name}")
    net.kick(ctx.core.config.server.name, ch, u, " ".join(reason) or "Kicked by an operator", ctx.now)
    return Reply(f"kicked {u.nick} from {ch.name}", {"channel": ch.name, "nick": u.nick})


def cmd_complete(ctx: AdminContext, kind: str, prefix: str = "") -> Reply:
    """complete KIND [PREFIX]"""
    names = ctx.core.admin.names(kind, prefix, ctx)
    return Reply("\n".join(names), names)


# handler (its docstring is the syntax line), help, kinds of arguments not named by their placeholder
BUILTIN_COMMANDS = [
    (cmd_status, "version, uptime, listeners, connections, links, memory"),
    (cmd_stop, "stop the server cleanly (tell peers, drain, close)"),
    (cmd_register, "create an account usable from every protocol", {"USER": None}),
    (cmd_unregister, "delete an account"),
    (cmd_passwd, "change an account's password"),
    (cmd_accounts, "list accounts"),
    (cmd_backup, "write every store to FILE (a portable dump; `relayctl restore` reads it)"),
    (cmd_flush, "reply once every queued storage write is committed"),
    (cmd_export, "copy this server's database onto PostgreSQL (then switch storage: to it)"),
    (cmd_log_level, "change the log level at runtime"),
    (cmd_reload_config, "re-read the config file and apply what can change at runtime"),
    (cmd_help, "list commands, or describe one"),
    (cmd_complete, "the names of one argument kind that start with PREFIX (what the shell's Tab offers)"),
    (cmd_module_list, "list loaded modules"),
    (cmd_module_load, "load a module (options from the config's modules: section)", {"NAME": "module-available"}),
    (cmd_module_unload, "unload a module and everything it registered", {"NAME": "module-loaded"}),
    (cmd_module_reload, "reload a module's code, keeping its saved state", {"NAME": "module-loaded"}),
    (cmd_group_add, "put an account in a group (for acl: group matches)"),
    (cmd_group_remove, "take an account out of a group"),
    (cmd_group_list, "list an account's groups"),
    (cmd_kick, "remove a member from a channel, network-wide"),
    (cmd_link, "connect to a peer of the links: section"),
    (cmd_unlink, "drop the link with a peer (and stop autoconnecting to it)", {"PEER": "linked-peer"}),
    (cmd_map, "the server tree, with each link's lag and uptime"),
    (cmd_links, "this server's links with frame and byte counters by type"),
    (cmd_dump_state, "the network state as this server sees it, or its --digest"),
]


def builtin_specs() -> list[CommandSpec]:
    """The built-in commands as declared (relayctl lists them without a server)."""
    return [parse_syntax(fn.__doc__.strip(), text, *kinds) for fn, text, *kinds in BUILTIN_COMMANDS]


def _loaded(ctx: AdminContext):
    return ctx.core.modules.loaded


def _available(ctx: AdminContext):
    """Modules that could be loaded now: those that ship, and those the config names."""
    return (set(shipped_modules()) | set(ctx.core.config.modules)) - set(ctx.core.modules.loaded)


def _linked(ctx: AdminContext):
    return [s.peer_name for s in ctx.core.links.peers.values() if s.peer_name]


def _servers(ctx: AdminContext):
    tree = ctx.core.links.tree
    return [tree.server(sid).name for sid in tree.servers()]


# kind -> the names of that kind, for the shell's completion and `complete KIND`
ARGUMENT_KINDS = {
    "module-loaded": _loaded,
    "module-available": _available,
    "account": lambda ctx: ctx.core.accounts.names(),
    "channel": lambda ctx: [ch.name for ch in ctx.core.net.channels.values()],
    "nick": lambda ctx: [u.nick for u in ctx.core.net.nicks.values()],
    "log-level": lambda ctx: LOG_LEVELS,
    "peer": lambda ctx: [b.name for b in ctx.core.config.links],
    "linked-peer": _linked,
    "server": _servers,
    "command": lambda ctx: {c.words[0] for c in ctx.core.admin.commands.values()},
    "kind": lambda ctx: ctx.core.admin.kinds,
}


def install(core: "CoreServices") -> None:
    for kind, names in ARGUMENT_KINDS.items():
        core.admin.kind(kind, names)
    for fn, text, *kinds in BUILTIN_COMMANDS:
        spec = parse_syntax(fn.__doc__.strip(), text, *kinds)
        core.admin.add(spec.name, fn, syntax=spec.syntax, help=text, kinds=kinds[0] if kinds else None)
