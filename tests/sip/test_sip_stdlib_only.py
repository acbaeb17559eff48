"""bridges.sip is sans-IO and stdlib only: it imports nothing but the standard library and itself, and
none of the modules that do I/O or read the clock."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import bridges.sip

PACKAGE = Path(bridges.sip.__file__).parent
IO_MODULES = {"socket", "select", "selectors", "asyncio", "threading", "time", "logging", "subprocess"}


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
            assert name.startswith("bridges.sip") or top in sys.stdlib_module_names, (path.name, name)
            assert top not in IO_MODULES, (path.name, name)
