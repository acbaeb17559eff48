"""Runtime modules, like Prosody's and ejabberd's.

A module is a Python module with `setup(module)`, and optionally an `Options`
pydantic model (its config, validated like the rest), `save(module)` and
`restore(module, state)` to keep state across a reload. Everything a module
registers through its `Module` handle is recorded, so unloading it needs no
code from its author.

Names resolve to `relay.modules.<name>`, then `relay.<name>.module` (the IRC
protocol package), then `bridges.<name>.module`, then a service of a protocol
package, `bridges.<p>.<name>.module` (XMPP's `muc`, `pubsub`), then a dotted import path. The
core imports them by name only: it never imports a protocol.

Modules meet through two registries, like Prosody's `module:add_item` and
`module:provides`: items (`add_item("irc-command", spec)`: any module may add
to a list that the owning module watches through the `item_added/<key>` and
`item_removed/<key>` hooks) and services (`provide("irc", service)`: one
object by name). Both are undone on unload.

A module whose stores declare what they load (`SCHEMAS`, `Schema.loads`) and
that is loaded while the server serves does not run `setup` at once: its reads
go through `storage.read` first (the loop serves everyone meanwhile), then
`setup` opens its stores from memory. Such loads, and any load given while one
waits, start one after the other in order (a module may need another's service).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from pydantic import BaseModel, ValidationError

from relay.core.admin import specs_of
from relay.core.config import format_errors
from relay.core.module_names import ModuleError, import_module, resolve, section_model  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from relay.core.interfaces import CoreServices

log = logging.getLogger("relay.modules")


class Module:
    """The handle a module's setup() receives; every registration is recorded here."""

    def __init__(self, manager: "ModuleManager", name: str, pymod, options: Any):
        self.manager = manager
        self.core: CoreServices = manager.core
        self.name = name
        self.pymod = pymod
        self.options = options
        self.log = logging.getLogger(f"relay.mod.{name}")
        self.state: dict[str, Any] = {}
        self._hooks: list = []
        self._timers: list = []
        self._commands: list[str] = []
        self._items: list[tuple[str, Any]] = []
        self._services: list[str] = []
        self._protocols: list[str] = []
        self._datagram_protocols: list[str] = []
        self._routes: list = []      # HTTP and WebSocket routes (relay.core.http_routes)
        self._dials: list = []       # outbound connections' handles (cancel() closes them)
        self._cleanups: list[Callable[[], None]] = []
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        """Something the operator should know about this load (e.g. a missing listener): logged, and
        shown by `module load`."""
        self.notes.append(text)
        self.log.info("%s", text.replace("\n", " "))

    def hook(self, hook: str, fn: Callable, priority: int = 0):
        h = self.core.hooks.add(hook, fn, priority, owner=self.name)
        self._hooks.append(h)
        return h

    def unhook(self, h) -> None:
        """Remove a handler `hook` returned, before unload (a service that detaches and attaches again)."""
        self.core.hooks.remove(h)
        if h in self._hooks:
            self._hooks.remove(h)

    def timer(self, delay: float, fn: Callable[[float], None]):
        t = self.core.timers.call_at(self.core.now() + delay, fn, owner=self.name)
        self._timers.append(t)
        return t

    def every(self, interval: float, fn: Callable[[float], None]):
        t = self.core.timers.every(interval, fn, self.core.now(), owner=self.name)
        self._timers.append(t)
        return t

    def command(self, name: str, handler: Callable, syntax: str = "", help: str = "", **counts):
        """An operator command, available in the shell and as `relayctl NAME ...`.

        Its syntax and help default to the module's static `COMMANDS = {syntax: help}`
        (which relayctl reads without a server); the syntax gives the argument counts."""
        if not syntax:
            declared = {spec.name: spec for spec in specs_of(getattr(self.pymod, "COMMANDS", {}))}
            if name not in declared:
                raise ModuleError(f"module {self.name}: command {name!r} is not declared in its COMMANDS")
            syntax, help = declared[name].syntax, help or declared[name].help
        self.core.admin.add(name, handler, syntax=syntax, help=help, owner=self.name, **counts)
        self._commands.append(name)

    def add_item(self, key: str, item: Any) -> Any:
        """Add to a named list that another module consumes (e.g. "irc-command")."""
        self.core.items.add(key, item, self.name)
        self._items.append((key, item))
        return item

    def provide(self, name: str, service: Any) -> Any:
        """Publish an object other modules and operator commands can find as core.services[name]."""
        if name in self.core.services:
            raise ModuleError(f"service {name!r} is already provided")
        self.core.services[name] = service
        self._services.append(name)
        return service

    def protocol(self, proto: str, factory: Callable):
        """Provide a listener protocol: `listen: [{proto: NAME, ...}]` entries use `factory`."""
        self.core.add_protocol(proto, factory, owner=self.name)
        self._protocols.append(proto)

    def datagram_protocol(self, proto: str, factory: Callable):
        """Provide a UDP listener protocol: `listen: [{proto: NAME, transport: udp, ...}]` entries use
        `factory(endpoint, listener, now) -> handler`; the handler gets `datagram_received(data, addr, now)`
        and answers with `endpoint.send_to(data, addr)`."""
        self.core.add_datagram_protocol(proto, factory, owner=self.name)
        self._datagram_protocols.append(proto)

    def http_route(self, path_prefix: str, handler: Callable):
        """Serve plain HTTP under `path_prefix` on the `http` listener: `handler(request, now) -> HttpResponse`."""
        route = self.core.http.add_http(path_prefix, handler, owner=self.name)
        self._routes.append(route)
        return route

    def websocket_route(self, path: str, subprotocols, factory: Callable):
        """Serve a WebSocket protocol at `path` on the `http` listener; `subprotocols` maps each name (None:
        none offered) to a Framing. `factory(transport, listener, now)` sees the same Transport as on TCP."""
        route = self.core.http.add_websocket(path, subprotocols, factory, owner=self.name)
        self._routes.append(route)
        return route

    def dial(self, host: str, port: int, factory: Callable, tls: bool = False,
             on_fail: Callable[[str], None] | None = None):
        """Connect out; once connected `factory(transport, None, now)` makes the handler, as for a listener.
        `on_fail(reason)` is told if the connection cannot be made. Unloading the module closes it."""
        if self.core.dialer is None:
            raise ModuleError("outbound connections need the runtime (no dialer in this process)")
        handle = self.core.dialer(host, port, factory, proto=self.name, tls=tls, on_fail=on_fail)
        self._dials = [d for d in self._dials if not d.done] + [handle]
        return handle

    def on_unload(self, fn: Callable[[], None]):
        self._cleanups.append(fn)

    def registrations(self) -> dict[str, int]:
        out = {
            "hooks": sum(1 for h in self._hooks if h in self.core.hooks.handlers(h.hook)),
            "timers": sum(1 for t in self._timers if not t.cancelled),
            "commands": len(self._commands), "protocols": len(self._protocols),
            "datagram_protocols": len(self._datagram_protocols),
            "routes": len(self._routes), "dials": sum(1 for d in self._dials if not d.done),
        }
        for key, _ in self._items:  # "irc-command" -> "irc_commands"
            k = key.replace("-", "_") + "s"
            out[k] = out.get(k, 0) + 1
        if self._services:
            out["services"] = len(self._services)
        return out

    def _teardown(self) -> None:
        for fn in reversed(self._cleanups):
            try:
                fn()
            except Exception:
                self.log.exception("cleanup of module %s raised", self.name)
        for h in self._hooks:
            self.core.hooks.remove(h)
        for t in self._timers:
            t.cancel()
        for c in self._commands:
            self.core.admin.remove(c, owner=self.name)
        for key, item in reversed(self._items):
            self.core.items.remove(key, item)
        for name in self._services:
            self.core.services.pop(name, None)
        for p in self._protocols:
            self.core.remove_protocol(p, owner=self.name)
        for p in self._datagram_protocols:
            self.core.remove_datagram_protocol(p, owner=self.name)
        for r in self._routes:
            self.core.http.remove(r, owner=self.name)
        for d in self._dials:
            d.cancel("Module unloaded")
        self._hooks.clear(); self._timers.clear(); self._commands.clear()
        self._items.clear(); self._services.clear(); self._protocols.clear(); self._cleanups.clear()
        self._datagram_protocols.clear(); self._routes.clear(); self._dials.clear()


class ItemRegistry:
    """Named lists modules add to; the consumer hears `item_added/<key>` and `item_removed/<key>`."""

    def __init__(self, hooks) -> None:
        self.hooks = hooks
        self.lists: dict[str, list[tuple[Any, str]]] = {}

    def get(self, key: str) -> list[Any]:
        return [item for item, _ in self.lists.get(key, ())]

    def add(self, key: str, item: Any, owner: str) -> None:
        self.lists.setdefault(key, []).append((item, owner))
        self.hooks.run(f"item_added/{key}", item, owner)

    def remove(self, key: str, item: Any) -> None:
        entries = self.lists.get(key, [])
        for i, (it, owner) in enumerate(entries):
            if it is item:
                del entries[i]
                self.hooks.run(f"item_removed/{key}", item, owner)
                return


def shipped_modules() -> dict[str, Path]:
    """The modules that ship with relaynet, by name: their source files (nothing is imported)."""
    found: dict[str, Path] = {}
    for pkg, pattern in (("relay.modules", "*.py"), ("bridges", "*/module.py"), ("bridges", "*/*/module.py")):
        spec = importlib.util.find_spec(pkg)
        for d in (spec.submodule_search_locations or []) if spec else []:
            for f in sorted(Path(d).glob(pattern)):
                name = f.parent.name if f.name == "module.py" else f.stem
                if not name.startswith("_"):
                    found.setdefault(name, f)
    for name in CORE_MODULES:
        spec = importlib.util.find_spec(name)
        if spec and spec.submodule_search_locations:
            found.setdefault(name, Path(next(iter(spec.submodule_search_locations))) / "module.py")
    return dict(sorted(found.items()))


def declared_commands(source: Path) -> dict[str, str]:
    """A module file's `COMMANDS = {syntax: help}`, read as a literal (the module is not imported)."""
    try:
        tree = ast.parse(source.read_text(), str(source))
    except (OSError, SyntaxError):
        return {}
    for node in tree.body:
        if (isinstance(node, (ast.Assign, ast.AnnAssign)) and
                any(isinstance(t, ast.Name) and t.id == "COMMANDS"
                    for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return {}
            return value if isinstance(value, dict) else {}
    return {}


def validate_options(name: str, pymod, options: dict | None) -> Any:
    model: type[BaseModel] | None = getattr(pymod, "Options", None)
    if model is None:
        if options:
            raise ModuleError(f"modules.{name}: this module takes no options")
        return None
    try:
        return model.model_validate(options or {})
    except ValidationError as e:
        raise ModuleError("\n".join(f"modules.{name}.{line}" for line in format_errors(e))) from None


# Loaded by the core at start, before the config's modules; they can be reloaded, not unloaded.
# IRC is the native protocol: a module like the others, loaded on every server.
CORE_MODULES = ("irc", "netsplit")


class ModuleManager:
    def __init__(self, core: "CoreServices"):
        self.core = core
        self.loaded: dict[str, Module] = {}
        self._reloading = False
        # Loads waiting for their stores' reads (a module loaded while the server serves), in order:
        # each starts when the one before has set up (a module may need another's service).
        self.loading: dict[str, tuple[Module, Callable, Any]] = {}
        self._reading: Module | None = None      # the one whose reads are under way

    def _reads_first(self, pymod) -> bool:
        """Must this load read its stores first? While serving, when its stores declare what they load."""
        storage = getattr(self.core, "storage", None)
        return (bool(getattr(self.core, "serving", False)) and storage is not None and storage.db is not None
                and any(s.loads for s in getattr(pymod, "SCHEMAS", ())))

    def check(self, name: str, options: dict | None) -> None:
        """Validate a module's name and options without loading it (config load)."""
        validate_options(name, importlib.import_module(resolve(name)), options)

    def load(self, name: str, options: dict | None = None, state: Any = None) -> Module:
        if name in self.loaded:
            raise ModuleError(f"module {name} is already loaded")
        if name in self.loading:
            raise ModuleError(f"module {name} is already loading (reading its stored state)")
        pymod = import_module(name)
        if options is None and self.core.config.section(name) is not None:
            options = self.core.config.section(name).model_dump()
        opts = validate_options(name, pymod, options)
        setup = getattr(pymod, "setup", None)
        if setup is None:
            raise ModuleError(f"module {name} has no setup(module) function")
        mod = Module(self, name, pymod, opts)
        if self.loading or self._reads_first(pymod):
            # Its stores' reads first, through storage.read (the loop serves everyone meanwhile); then
            # its setup opens them as at start, from memory. `module load` has answered by then.
            mod.note(f"reading the stored state of {name}: it starts once that is in"
                     + (f" (after {', '.join(self.loading)})" if self.loading else ""))
            self.loading[name] = (mod, setup, state)
            self._read_next()
            return mod
        return self._setup(mod, setup, state)

    def _read_next(self) -> None:
        while self._reading is None and self.loading:
            name = next(iter(self.loading))
            mod = self.loading[name][0]
            if not self._reads_first(mod.pymod):      # no stores (queued behind one that had)
                self._start_later(name, mod, None)
                continue
            self._reading = mod
            self.core.storage.preload(mod.pymod.SCHEMAS, lambda error, n=name, m=mod: self._read_done(n, m, error))

    def _read_done(self, name: str, mod: Module, error: str | None) -> None:
        self._reading = None
        try:
            self._start_later(name, mod, error)
        finally:
            self.core.storage.loaded()
        self._read_next()

    def _start_later(self, name: str, mod: Module, error: str | None) -> None:
        entry = self.loading.get(name)
        if entry is None or entry[0] is not mod:      # unloaded while its reads ran
            return
        del self.loading[name]
        if error is not None:
            log.error("module %s: not loaded: its stored state could not be read (%s)", name, error)
            return
        try:
            self._setup(mod, entry[1], entry[2])
        except ModuleError as e:
            log.error("%s", e)

    def _setup(self, mod: Module, setup: Callable, state: Any) -> Module:
        name, pymod = mod.name, mod.pymod
        try:
            setup(mod)
            if state is not None and hasattr(pymod, "restore"):
                pymod.restore(mod, state)
        except Exception as e:
            mod._teardown()
            log.exception("module %s failed in setup", name)
            raise ModuleError(f"module {name} failed to load: {type(e).__name__}: {e}") from e
        self.loaded[name] = mod
        log.info("module %s loaded", name)
        self.core.hooks.run("module_loaded", name)
        return mod

    def unload(self, name: str) -> Any:
        """Unload and return the module's saved state (if it has `save`)."""
        if name in self.loading and name not in self.loaded:
            del self.loading[name]              # still reading its stores: it never starts
            log.info("module %s unloaded before it started", name)
            return None
        mod = self.loaded.get(name)
        if mod is None:
            raise ModuleError(f"module {name} is not loaded")
        if name in CORE_MODULES and not self._reloading:
            raise ModuleError(f"{name} is a core module: it can be reloaded, not unloaded")
        state = None
        if hasattr(mod.pymod, "save"):
            try:
                state = mod.pymod.save(mod)
            except Exception:
                log.exception("module %s: save() raised; its state is lost", name)
        del self.loaded[name]
        mod._teardown()
        log.info("module %s unloaded", name)
        self.core.hooks.run("module_unloaded", name)
        return state

    def reload(self, name: str, options: dict | None = None) -> Module:
        old = self.loaded.get(name)
        if old is None:
            raise ModuleError(f"module {name} is not loaded")
        opts = options if options is not None else self.core.config.modules.get(name)
        self._reloading = True
        try:
            state = self.unload(name)
        finally:
            self._reloading = False
        pyname = old.pymod.__name__
        try:
            importlib.reload(sys.modules[pyname])
        except Exception as e:
            log.exception("module %s: new code failed to import; reloading the old one", name)
            self.load(name, opts, state)
            raise ModuleError(f"module {name}: new code failed to import ({e}); old code kept") from e
        return self.load(name, opts, state)

    def unload_all(self) -> None:
        self._reloading = True  # shutting down: core modules go too
        self.loading.clear()    # those still reading their stores never start
        for name in reversed(list(self.loaded)):
            try:
                self.unload(name)
            except Exception:
                log.exception("unloading %s", name)
