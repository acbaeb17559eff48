"""Module manager: automatic unload, reload with state, failures leave the server running."""

import pytest

from relay.core.config import parse
from relay.core.modules import ModuleError
from relay.core.server import Core


@pytest.fixture
def core(tmp_path):
    cfg = parse({"data_dir": str(tmp_path), "modules": {"mods.sample_mod": {"greeting": "hey"}}})
    c = Core(cfg, now=1000.0)
    c.modules.load("irc")  # the native protocol, which the sample module adds a command to
    yield c
    c.storage.close()


def snapshot(core):
    return ({h: len(core.hooks.handlers(h)) for h in ("member_joined",)}, core.timers.pending(),
            set(core.admin.commands), set(core.services["irc"].commands.commands), set(core.protocols))


def test_load_registers_and_unload_removes_everything(core):
    before = snapshot(core)
    mod = core.modules.load("mods.sample_mod", {"greeting": "hey"})
    assert mod.registrations() == {"hooks": 1, "timers": 1, "commands": 1, "irc_commands": 1, "protocols": 1,
                                   "datagram_protocols": 0, "routes": 0, "dials": 0}
    assert "sample hello" in core.admin.commands and "SAMPLE" in core.services["irc"].commands.commands
    assert "sample" in core.protocols
    for t in (1001.0, 1002.0, 1003.5):
        core.tick(t)
    assert mod.state["ticks"] == 3
    core.modules.unload("mods.sample_mod")
    assert snapshot(core) == before
    core.tick(1010.0)
    assert mod.state["ticks"] == 3  # its timer is gone


def test_reload_keeps_state(core):
    mod = core.modules.load("mods.sample_mod", {"greeting": "hey"})
    core.tick(1001.0)
    core.tick(1002.0)
    assert mod.state["ticks"] == 2
    new = core.modules.reload("mods.sample_mod", {"greeting": "hey"})
    assert new is not mod and new.state["ticks"] == 2
    assert len(core.hooks.handlers("member_joined")) == 1  # not doubled


def test_failed_setup_is_undone_and_reported(core):
    before = snapshot(core)
    with pytest.raises(ModuleError, match="setup failed on purpose"):
        core.modules.load("mods.sample_mod", {"fail_setup": True})
    assert snapshot(core) == before
    assert "mods.sample_mod" not in core.modules.loaded


def test_bad_options_and_unknown_modules(core):
    with pytest.raises(ModuleError, match=r"modules.mods.sample_mod.greeting: Input should be a valid string"):
        core.modules.load("mods.sample_mod", {"greeting": 5})
    with pytest.raises(ModuleError, match=r"modules.mods.sample_mod.nope: unknown key|nope"):
        core.modules.load("mods.sample_mod", {"nope": 1})
    with pytest.raises(ModuleError, match="no module named 'nosuch'"):
        core.modules.load("nosuch")
    with pytest.raises(ModuleError, match="not loaded"):
        core.modules.unload("welcome")
    core.modules.load("welcome", {})
    with pytest.raises(ModuleError, match="already loaded"):
        core.modules.load("welcome", {})


def test_module_commands_dispatch_through_the_admin_table(core):
    from relay.core.builtin_admin import AdminContext
    core.modules.load("mods.sample_mod", {"greeting": "hey"})
    r = core.admin.dispatch(["sample", "hello", "a", "b"], AdminContext(core, 1.0))
    assert r.text == "hey a b"
    r = core.admin.dispatch(["module", "list"], AdminContext(core, 1.0))
    assert "mods.sample_mod" in r.text


def test_core_hooks_fire_for_module_lifecycle(core):
    events = []
    core.hooks.add("module_loaded", lambda n: events.append(("loaded", n)))
    core.hooks.add("module_unloaded", lambda n: events.append(("unloaded", n)))
    core.modules.load("welcome", {})
    core.modules.unload("welcome")
    assert events == [("loaded", "welcome"), ("unloaded", "welcome")]


def test_the_runtime_says_once_when_it_serves_and_a_store_loaded_after_reads_asynchronously(tmp_path):
    """`Core.serving` (and the `serving` hook) is the one signal that the loop serves clients: the mqtt
    module loaded before it reads its store at once, loaded after it through `storage.read`."""
    from relay.core.config import parse
    from relay.core.server import Core
    core = Core(parse({"data_dir": str(tmp_path), "listen": [{"proto": "mqtt", "host": "127.0.0.1", "port": 1}],
                       "modules": {"mqtt": {}}}), now=10.0)
    heard = []
    core.hooks.add("serving", lambda: heard.append(core.serving))
    core.start(10.0)
    assert not core.serving and not any("reading the stored" in n for n in core.modules.loaded["mqtt"].notes)
    core.started_serving(11.0)
    assert core.serving and heard == [True]
    core.modules.unload("mqtt")
    m = core.modules.load("mqtt", {})
    assert any("reading the stored MQTT state" in n for n in m.notes) and "mqtt" in core.protocols
