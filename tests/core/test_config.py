"""Every config error names its key path; the default file equals the built-in default."""

from pathlib import Path

import pytest
import yaml

from relay.core import config as config_mod
from relay.core.config import ConfigError, load, parse

ROOT = Path(__file__).resolve().parents[2]


def errors_of(data) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse(data)
    return e.value.errors


def test_builtin_default_is_valid_and_listens_on_loopback():
    cfg = parse({})
    assert [(l.proto, l.host, l.port, l.tls, l.transport) for l in cfg.listen] == [
        ("irc", "127.0.0.1", 6667, False, "tcp"), ("irc", "127.0.0.1", 6697, True, "tcp"),
        ("mqtt", "127.0.0.1", 1883, False, "tcp"), ("http", "127.0.0.1", 8080, False, "tcp"),
        ("xmpp", "127.0.0.1", 5222, False, "tcp"), ("xmpp", "127.0.0.1", 5223, True, "tcp"),
        ("sip", "127.0.0.1", 5060, False, "udp"), ("sip", "127.0.0.1", 5060, False, "tcp")]
    assert cfg.modules == {"mqtt": {}, "xmpp": {}, "pubsub": {}, "sip": {}, "muc": {}}


def test_default_yaml_equals_builtin_default():
    from_file = config_mod.dump(load(ROOT / "configs" / "default.yaml"))
    assert from_file == config_mod.defaults_dump()


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("tree-*/*.yaml")))
def test_shipped_tree_configs_are_valid(path):
    load(path)


def test_tree_configs_can_run_side_by_side():
    for tree in ("tree-3", "tree-7"):
        cfgs = [load(p) for p in sorted((ROOT / "configs" / tree).glob("*.yaml"))]
        ports = [l.port for c in cfgs for l in c.listen]
        assert len(ports) == len(set(ports)), tree
        assert len({c.data_path for c in cfgs}) == len(cfgs)
        assert len({c.control_path for c in cfgs}) == len(cfgs)
        assert len({c.server.id for c in cfgs}) == len({c.server.name for c in cfgs}) == len(cfgs)


@pytest.mark.parametrize("data, expected", [
    ({"listen": [{"proto": "irc", "port": 6667}, {"proto": "irc", "port": 70000}]}, "listen[1].port: must be 1-65535"),
    ({"listen": [{"proto": "irc", "port": 0}]}, "listen[0].port: must be 1-65535"),
    ({"listen": [{"proto": "irc", "port": "x"}]}, "listen[0].port: Input should be a valid integer"),
    ({"listen": [{"port": 1}]}, "listen[0].proto: required key is missing"),
    ({"listen": [{"proto": "irc", "port": 1, "colour": 1}]}, "listen[0].colour: unknown key"),
    ({"listen": [{"proto": "irc", "port": 1}, {"proto": "irc", "port": 1}]}, "listen: listen[1] uses 127.0.0.1:1"),
    ({"server": {"id": "1"}}, "server.id: must be 3 characters"),
    ({"server": {"id": "AAA"}}, "server.id: must be 3 characters"),
    ({"server": {"name": "nodot"}}, "server.name: must be a host-like name"),
    ({"server": {"network": "bad name"}}, "server.network: must be 1-32"),
    ({"nonsense": 1}, "nonsense: unknown key"),
    ({"log": {"level": "loud"}}, "log.level: Input should be 'debug'"),
    ({"log": {"max_bytes": 0}}, "log.max_bytes: must be > 0"),
    ({"log": {"backups": -1}}, "log.backups: Input should be greater than or equal to 0"),
    ({"limits": {"sendq": -5}}, "limits.sendq: must be > 0"),
    ({"limits": {"shutdown_grace": 0}}, "limits.shutdown_grace: must be > 0"),
    ({"irc": {"nicklen": 0}}, "irc.nicklen: Input should be greater than or equal to 1"),
    ({"irc": {"opers": [{"name": "x"}]}}, "irc.opers[0].password: required key is missing"),
    ({"accounts": {"scram_iterations": 10}}, "accounts.scram_iterations: Input should be greater than or equal to 4096"),
    ({"links": [{"name": "b.test", "port": 7000, "secret": "short"}]}, "links[0].secret: String should have at least 8"),
    ({"links": [{"name": "relay.local", "port": 7000, "secret": "longenough"}]}, "links[0].name: is this server's own name"),
    ({"split_hold": -1}, "split_hold: Input should be greater than or equal to 0"),
    ({"acl": {"admin": {"ip": ["not-a-net"]}}}, "acl.admin.ip[0]: not an IP network"),
    ({"access_rules": {"oper": [{"allow": "nosuchacl"}]}}, "access_rules.oper[0]"),
    ({"shapers": {"slow": {"bytes_per_second": 1, "messages_per_second": 1, "burst": 0}}}, "shapers.slow.burst"),
])
def test_error_names_key_path(data, expected):
    errs = errors_of(data)
    assert any(e.startswith(expected) for e in errs), errs


def test_several_errors_are_all_reported():
    errs = errors_of({"listen": [{"proto": "irc", "port": 0}], "log": {"level": "x"}})
    assert len(errs) == 2


def test_top_level_must_be_a_mapping():
    assert errors_of([1, 2]) == ["(top level): must be a mapping of keys to values"]


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError) as e:
        load(tmp_path / "missing.yaml")
    assert "cannot read" in e.value.errors[0]
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: [\n")
    with pytest.raises(ConfigError) as e:
        load(bad)
    assert "not valid YAML (line" in e.value.errors[0]


def test_relative_paths_resolve_from_the_config_file(tmp_path):
    p = tmp_path / "sub" / "c.yaml"
    p.parent.mkdir()
    p.write_text(yaml.safe_dump({"data_dir": "d"}))
    cfg = load(p)
    assert cfg.data_path == (tmp_path / "sub" / "d").resolve()
    assert cfg.control_path == cfg.data_path / "control.sock"
