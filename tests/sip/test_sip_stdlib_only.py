"""bridges.sip's codec layer is sans-IO and stdlib only: it imports nothing but the standard library and
itself. The module layer on top (registrar, proxy, mapping: MODULE_LAYER) may import relay.core and
pydantic; no file of the package imports the modules that do network I/O or read the clock."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import bridges.sip

PACKAGE = Path(bridges.sip.__file__).parent
IO_MODULES = {"socket", "select", "selectors", "asyncio", "threading", "time", "logging", "subprocess",
              "gevent"}
MODULE_LAYER = {"module.py", "service.py", "registrar.py", "proxy.py", "mapping.py", "bindings.py",
                "ratelimit.py", "transport.py", "conference.py", "federation.py",
                "presence.py"}


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names


def test_only_stdlib_and_itself():
    files = sorted(PACKAGE.glob("*.py"))
    assert len(files) >= 7
    for path in files:
        for name in imports(path):
            top = name.split(".")[0]
            if path.name not in MODULE_LAYER:
                assert name.startswith("bridges.sip") or top in sys.stdlib_module_names, (path.name, name)
            assert top not in IO_MODULES, (path.name, name)


def test_the_codec_layer_does_not_import_the_module_layer():
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name not in MODULE_LAYER:
            for name in imports(path):
                assert name.split(".")[-1] + ".py" not in MODULE_LAYER, (path.name, name)
