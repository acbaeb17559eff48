"""The operator command table: syntax lines give the argument counts and kinds; handlers are called as declared."""

import pytest

from relay.core.admin import AdminError, AdminTable, Reply, parse_syntax
from relay.core.builtin_admin import BUILTIN_COMMANDS, AdminContext, builtin_specs
from relay.core.config import parse
from relay.core.modules import ModuleError, declared_commands, shipped_modules
from relay.core.server import Core


@pytest.fixture
def core(tmp_path):
    cfg = parse({"data_dir": str(tmp_path), "modules": {"welcome": {}}})
    c = Core(cfg, now=1000.0)
    c.start(1000.0)
    yield c
    c.storage.close()


def run(core, *argv):
    return core.admin.dispatch(list(argv), AdminContext(core, 1000.0))


@pytest.mark.parametrize("syntax, name, arity, args", [
    ("status", "status", (0, 0), []),
    ("module load NAME", "module load", (1, 1), [("NAME", None, False, False)]),
    ("kick CHANNEL NICK [REASON...]", "kick", (2, None),
     [("CHANNEL", "channel", False, False), ("NICK", "nick", False, False), ("REASON", None, True, True)]),
    ("help [COMMAND...]", "help", (0, None), [("COMMAND", "command", True, True)]),
    ("complete KIND [PREFIX]", "complete", (1, 2), [("KIND", "kind", False, False), ("PREFIX", None, True, False)]),
    ("dump-state [--digest]", "dump-state", (0, 1), [("--digest", "literal", True, False)]),
    ("log-level LEVEL", "log-level", (1, 1), [("LEVEL", "log-level", False, False)]),
    ("verify result ROUND", "verify result", (1, 1), [("ROUND", None, False, False)]),
])
def test_syntax_lines_give_name_counts_and_kinds(syntax, name, arity, args):
    spec = parse_syntax(syntax, "help text")
    assert spec.name == name and spec.arity == arity
    assert [(a.name, a.kind, a.optional, a.rest) for a in spec.args] == args


def test_a_command_can_name_the_kind_of_an_argument():
    spec = parse_syntax("module unload NAME", kinds={"NAME": "module-loaded"})
    assert spec.args[0].kind == "module-loaded"
    assert parse_syntax("register USER PASSWORD", kinds={"USER": None}).args[0].kind is None  # a new name
    with pytest.raises(ValueError, match="kinds given for missing arguments"):
        parse_syntax("module list", kinds={"NAME": "module-loaded"})


@pytest.mark.parametrize("syntax", ["NAME", "Module load", "x [A] B", "x A... B", "x [A", "x a=b"])
def test_malformed_syntax_lines_are_refused(syntax):
    with pytest.raises(ValueError, match="syntax"):
        parse_syntax(syntax)


@pytest.mark.parametrize("syntax, handler, why", [
    ("x stats", lambda ctx, a: None, "cannot take 0"),
    ("x NAME", lambda ctx: None, "cannot take 1"),
    ("x [NAME]", lambda ctx, name: None, "cannot take 0"),
    ("x [WORDS...]", lambda ctx: None, "any number"),
    ("x [WORDS...]", lambda ctx, a, b: None, "any number"),
])
def test_a_handler_that_cannot_take_its_syntax_is_refused_when_added(syntax, handler, why):
    table = AdminTable()
    with pytest.raises(ValueError, match=why):
        table.add(parse_syntax(syntax).name, handler, syntax=syntax)
    assert not table.commands


def test_dispatch_calls_handlers_only_with_the_words_their_syntax_allows():
    table = AdminTable()
    calls = []
    table.add("x stats", lambda ctx: calls.append(()) or Reply("ok"))
    table.add("x say", lambda ctx, *w: calls.append(w) or Reply("ok"), syntax="x say WORD [WORD...]")
    table.add("x opt", lambda ctx, a="-": calls.append((a,)) or Reply("ok"), syntax="x opt [A]")
    for argv in (["x", "stats", "-c", "my.yaml"], ["x", "say"], ["x", "opt", "a", "b"]):
        with pytest.raises(AdminError, match="usage: ") as e:
            table.dispatch(argv, None)
        assert e.value.status == 2
    table.dispatch(["x", "stats"], None)
    table.dispatch(["x", "say", "a", "b", "c"], None)
    table.dispatch(["x", "opt"], None)
    assert calls == [(), ("a", "b", "c"), ("-",)]


def test_unknown_argument_kinds_are_refused():
    table = AdminTable()
    with pytest.raises(ValueError, match="unknown argument kind"):
        table.add("log-level", lambda ctx, level: None, syntax="log-level LEVEL")
    table.kind("log-level", lambda ctx: ["debug"])
    table.add("log-level", lambda ctx, level: None, syntax="log-level LEVEL")


def test_every_builtin_handler_is_headed_by_its_syntax_and_installed(core):
    specs = builtin_specs()
    assert len(specs) == len(BUILTIN_COMMANDS)
    for spec in specs:
        assert core.admin.commands[spec.name].spec == spec


def test_module_commands_get_syntax_and_help_from_the_modules_static_declaration(core):
    # The mqtt broker's commands take no words: extra words are a usage error, never a handler's TypeError.
    core.modules.load("mqtt", {})
    assert run(core, "mqtt", "stats").status == 0
    with pytest.raises(AdminError, match="usage: mqtt stats") as e:
        run(core, "mqtt", "stats", "-c", "my.yaml")
    assert e.value.status == 2
    declared = declared_commands(shipped_modules()["mqtt"])
    assert core.admin.commands["mqtt sessions"].help == declared["mqtt sessions"]


def test_every_shipped_module_declares_exactly_the_commands_it_registers(core):
    for name, source in shipped_modules().items():
        if name not in core.modules.loaded:
            core.modules.load(name, {})
        registered = {c.name: c for c in core.admin.commands.values() if c.owner == name}
        declared = {parse_syntax(s, h).name: (s, h) for s, h in declared_commands(source).items()}
        assert set(registered) == set(declared), name
        for n, c in registered.items():
            assert (c.syntax, c.help) == declared[n]


def test_a_module_command_without_a_declaration_is_refused(core, tmp_path, monkeypatch):
    (tmp_path / "undeclared_mod.py").write_text(
        "def setup(module):\n    module.command('undeclared go', lambda ctx: None)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleError, match="'undeclared go' is not declared in its COMMANDS"):
        core.modules.load("undeclared_mod")
    assert "undeclared go" not in core.admin.commands


def test_complete_lists_the_names_of_each_kind(core):
    assert run(core, "complete", "module-loaded").data == ["irc", "netsplit", "welcome"]
    available = run(core, "complete", "module-available").data
    assert "mqtt" in available and "filter" in available and "welcome" not in available
    run(core, "register", "carol", "pw")
    run(core, "register", "cecil", "pw")
    run(core, "register", "dave", "pw")
    assert run(core, "complete", "account", "C").data == ["carol", "cecil"]
    assert run(core, "complete", "log-level", "w").data == ["warning"]
    assert "module" in run(core, "complete", "command").data
    assert "account" in run(core, "complete", "kind").data
    with pytest.raises(AdminError, match="no argument kind 'planets'"):
        run(core, "complete", "planets")
