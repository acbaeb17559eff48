"""How module names resolve to Python modules; imported by config (for modules' own sections) and modules."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from pydantic import BaseModel


class ModuleError(Exception):
    pass


def _dirs(pkg: str) -> list[Path]:
    spec = importlib.util.find_spec(pkg)
    return [Path(d) for d in (spec.submodule_search_locations or [])] if spec else []


def _bridge_packages() -> list[str]:
    return sorted({p.name for d in _dirs("bridges") for p in d.iterdir() if (p / "__init__.py").exists()})


def resolve(name: str) -> str:
    """`relay.modules.NAME`, `relay.NAME.module`, `bridges.NAME.module`, a protocol's own service module
    `bridges.<p>.NAME.module` (such as the MUC service of XMPP), then a dotted path."""
    nested = [f"bridges.{p}.{name}.module" for p in _bridge_packages()] if name.isidentifier() else []
    for candidate in (f"relay.modules.{name}", f"relay.{name}.module", f"bridges.{name}.module",
                      *nested, f"{name}.module", name):
        try:
            if importlib.util.find_spec(candidate) is not None:
                return candidate
        except (ImportError, ValueError):
            continue
    raise ModuleError(f"no module named {name!r} (looked for relay.modules.{name}, bridges.{name}.module, {name})")


def shipped() -> list[str]:
    """The names of the modules that come with relaynet (what `resolve` finds without a dotted path)."""
    names = {p.stem for d in _dirs("relay.modules") for p in d.glob("*.py") if not p.name.startswith("_")}
    names |= {p.parent.name for d in _dirs("relay") for p in d.glob("*/module.py")}
    names |= {p.parent.name for d in _dirs("bridges") for p in (*d.glob("*/module.py"), *d.glob("*/*/module.py"))}
    return sorted(names)


def import_module(name: str):
    """The Python module of a relaynet module's name; ModuleError if it is missing or fails to import."""
    try:
        return importlib.import_module(resolve(name))
    except ModuleError:
        raise
    except Exception as e:
        raise ModuleError(f"module {name} failed to import: {type(e).__name__}: {e}") from e


def section_model(name: str) -> type[BaseModel] | None:
    """The Options model of a module that owns a top-level config section (`CONFIG_SECTION = True`)."""
    pymod = import_module(name)
    if not getattr(pymod, "CONFIG_SECTION", False):
        return None
    return getattr(pymod, "Options", None)
