import math

import pytest
import yaml

from relay.core.acl import ACL_SCHEMA, SHAPER_RULES, Acl, AclConfig, AclConfigError, AclEntry, Shaper, ShaperSpec, Subject

CONFIG = yaml.safe_load("""
acl:
  admin:
    account: [alice, bob]
    group: [ops]
    server: ["001", "hub.*"]
    ip: ["10.9.0.0/16", "2001:db8::/32"]
    glob: ["*@*.example.org"]
  local:
    ip: ["127.0.0.0/8", "::1/128"]
access_rules:
  register:
    - allow: local
    - deny: all
  oper:
    - allow: admin
  everyone:
    - allow
  shadowed:
    - deny: local
    - allow: local
shapers:
  normal: {bytes_per_second: 10000, messages_per_second: 5, burst: 10}
  fast:   {bytes_per_second: 1000000, messages_per_second: 1000, burst: 2000}
shaper_rules:
  - none: local
  - fast: admin
  - normal: all
""")


@pytest.fixture(scope="module")
def acl() -> Acl:
    return Acl.from_config(CONFIG["acl"], CONFIG["access_rules"], CONFIG["shapers"], CONFIG["shaper_rules"])


def config_errors(acl=None, access_rules=None, shapers=None, shaper_rules=None) -> list[str]:
    with pytest.raises(AclConfigError) as e:
        Acl.from_config(acl, access_rules, shapers, shaper_rules)
    assert isinstance(e.value, ValueError)
    return e.value.errors


# --- match types ------------------------------------------------------------

@pytest.mark.parametrize("subject, expected", [
    (Subject(account="alice"), True),
    (Subject(account="BOB"), True),                        # case-insensitive
    (Subject(account="carol"), False),
    (Subject(), False),
    (Subject(groups=frozenset({"users", "Ops"})), True),
    (Subject(groups=frozenset({"users"})), False),
    (Subject(server="001"), True),
    (Subject(server="002", server_name="leaf.example.org"), False),
    (Subject(server="002", server_name="HUB.example.org"), True),  # glob on the name
    (Subject(server_name="hubby"), False),
    (Subject(ident="joe@shell.example.org"), True),
    (Subject(ident="joe@example.org"), False),
    (Subject(ident="JOE@Shell.EXAMPLE.org"), True),
    (Subject(ip="10.9.200.1"), True),
    (Subject(ip="10.10.0.1"), False),
    (Subject(ip="2001:db8::42"), True),
    (Subject(ip="2001:db9::42"), False),
    (Subject(ip="::ffff:10.9.0.1"), True),                  # IPv4-mapped IPv6 matches the v4 net
    (Subject(ip="not an address"), False),
])
def test_match_types(acl, subject, expected):
    assert acl.match("admin", subject) is expected


def test_ip_mapped_and_v6_loopback(acl):
    assert acl.match("local", Subject(ip="127.0.0.1"))
    assert acl.match("local", Subject(ip="::ffff:127.0.0.1"))
    assert acl.match("local", Subject(ip="::1"))
    assert not acl.match("local", Subject(ip="::2"))
    assert not acl.match("local", Subject(ip="128.0.0.1"))


def test_mapped_network_in_config_matches_v4_clients():
    a = Acl.from_config({"m": {"ip": "::ffff:192.168.0.0/112"}})
    assert a.match("m", Subject(ip="192.168.3.4"))
    assert a.match("m", Subject(ip="::ffff:192.168.3.4"))
    assert not a.match("m", Subject(ip="192.169.0.1"))


def test_single_values_and_host_bits():
    a = Acl.from_config({"x": {"account": "Dave", "ip": "10.1.2.3/8"}})
    assert a.match("x", Subject(account="dave"))
    assert a.match("x", Subject(ip="10.200.0.1"))


def test_any_entry_matches(acl):
    # Each field of the set is enough on its own.
    assert acl.match("admin", Subject(account="nobody", ip="10.9.0.1"))
    assert acl.match("admin", Subject(account="nobody", server="001", ip="192.0.2.1"))


def test_builtins_and_unknown_acl(acl):
    s = Subject(account="alice", ip="127.0.0.1")
    assert acl.match("all", s)
    assert acl.match("all", Subject())
    assert not acl.match("none", s)
    assert not acl.match("no-such-acl", s)


# --- access rules -------------------------------------------------------------

def test_first_match_wins_and_default_deny(acl):
    local = Subject(ip="127.0.0.1")
    remote = Subject(ip="192.0.2.1")
    assert acl.allowed("register", local)
    assert not acl.allowed("register", remote)
    assert acl.decide("register", remote) == "deny"
    assert not acl.allowed("shadowed", local)            # deny line comes first
    assert acl.decide("shadowed", remote) == "deny"      # no line matches
    assert acl.allowed("oper", Subject(account="alice"))
    assert not acl.allowed("oper", Subject(account="mallory"))  # no match -> deny
    assert acl.allowed("everyone", remote)               # bare "- allow" = allow: all


def test_unknown_rule_denies(acl):
    assert acl.decide("no-such-rule", Subject(account="alice")) == "deny"
    assert not acl.allowed("no-such-rule", Subject(account="alice"))


def test_rule_names_in_config_order(acl):
    assert acl.rule_names() == ["register", "oper", "everyone", "shadowed"]


def test_empty_config_denies_everything():
    a = Acl.from_config({}, {}, {}, [])
    assert not a.allowed("register", Subject(ip="127.0.0.1"))
    assert a.shaper_for(Subject()) is None
    assert Acl().rule_names() == []


# --- shaper selection -----------------------------------------------------------

def test_shaper_for_first_match(acl):
    assert acl.shaper_for(Subject(ip="127.0.0.1", account="alice")) is None   # none: local comes first
    fast = acl.shaper_for(Subject(account="alice"), now=0.0)
    assert fast.name == "fast" and fast.messages_per_second == 1000
    normal = acl.shaper_for(Subject(account="carol"), now=0.0)
    assert normal.name == "normal" and normal.burst == 10
    assert acl.decide(SHAPER_RULES, Subject(account="carol")) == "normal"
    assert acl.decide(SHAPER_RULES, Subject(ip="127.0.0.1")) == "none"


def test_shaper_for_returns_a_new_instance(acl):
    s = Subject(account="carol")
    a, b = acl.shaper_for(s, now=0.0), acl.shaper_for(s, now=0.0)
    assert a is not b
    for _ in range(10):
        assert a.consume(10, 0.0) == 0.0
    assert a.consume(10, 0.0) > 0
    assert b.consume(10, 0.0) == 0.0    # b's buckets are its own


def test_no_shaper_rule_matches():
    a = Acl.from_config({"admin": {"account": "alice"}}, {},
                        {"slow": {"bytes_per_second": 1, "messages_per_second": 1, "burst": 1}},
                        [{"slow": "admin"}])
    assert a.shaper_for(Subject(account="bob")) is None
    assert a.shaper_for(Subject(account="alice")).name == "slow"


# --- token buckets ---------------------------------------------------------------

def flood(shaper: Shaper, count: int, interval: float, nbytes: int, t0: float) -> int:
    admitted = 0
    for i in range(count):
        if shaper.consume(nbytes, t0 + i * interval) == 0.0:
            admitted += 1
    return admitted


@pytest.mark.parametrize("t0", [0.0, 1.7e9])   # also at wall-clock magnitudes
def test_burst_then_message_rate(t0):
    shaper = Shaper(bytes_per_second=10_000, messages_per_second=5, burst=10, now=t0)
    # 1000 messages at 100/s: 9.99 s of simulated flood.
    admitted = flood(shaper, 1000, 0.01, 100, t0)
    elapsed = 999 * 0.01
    assert 10 + math.floor(5 * elapsed) - 1 <= admitted <= 10 + 5 * elapsed
    assert admitted == 59


def test_burst_is_available_at_once():
    shaper = Shaper(10_000, 5, 10, now=0.0)
    assert [shaper.consume(1, 0.0) for _ in range(10)] == [0.0] * 10
    assert shaper.consume(1, 0.0) == pytest.approx(0.2)


def test_bytes_limit():
    # Message rate is generous; bytes are the bottleneck. Byte burst = 1000 * 10 / 100 = 100 bytes.
    shaper = Shaper(bytes_per_second=1000, messages_per_second=100, burst=10, now=0.0)
    assert shaper.burst_bytes == 100
    admitted = flood(shaper, 1000, 0.001, 50, 0.0)      # 50 kB offered over ~1 s
    elapsed = 999 * 0.001
    assert admitted * 50 <= 100 + 1000 * elapsed
    assert admitted >= math.floor((100 + 1000 * elapsed) / 50) - 1


def test_delay_is_exact_and_refusal_takes_nothing():
    shaper = Shaper(10_000, 5, 10, now=100.0)
    for _ in range(10):
        shaper.consume(100, 100.0)
    delay = shaper.consume(100, 100.0)
    assert delay == pytest.approx(0.2)
    assert shaper.consume(100, 100.0 + delay / 2) > 0       # refused calls don't dig deeper
    assert shaper.consume(100, 100.0 + delay) == 0.0         # retrying after the delay succeeds
    assert shaper.consume(100, 100.0 + delay) > 0


def test_delay_reports_the_byte_shortfall():
    shaper = Shaper(bytes_per_second=1000, messages_per_second=1000, burst=100, now=0.0)  # 100-byte bucket
    assert shaper.consume(100, 0.0) == 0.0
    assert shaper.consume(50, 0.0) == pytest.approx(0.05)


def test_oversized_message_passes_when_full_then_leaves_debt():
    shaper = Shaper(bytes_per_second=1000, messages_per_second=10, burst=1, now=0.0)   # 100-byte bucket
    assert shaper.consume(5000, 0.0) == 0.0
    # 4900 bytes of debt plus 100 for the next full-size message: 5 s at 1000 B/s.
    assert shaper.consume(5000, 0.1) == pytest.approx(4.9)
    assert shaper.consume(5000, 5.0) == 0.0


def test_clock_stepping_back_refills_nothing():
    shaper = Shaper(10_000, 5, 1, now=10.0)
    assert shaper.consume(1, 10.0) == 0.0
    assert shaper.consume(1, 5.0) > 0
    assert shaper.consume(1, 10.2) == 0.0


def test_shaper_without_start_time():
    shaper = Shaper(10_000, 5, 2, now=None)
    assert shaper.consume(1, 1e9) == 0.0
    assert shaper.consume(1, 1e9) == 0.0
    assert shaper.consume(1, 1e9) == pytest.approx(0.2)


def test_shaper_rejects_bad_parameters():
    with pytest.raises(ValueError):
        Shaper(0, 5, 10, now=0.0)
    with pytest.raises(ValueError):
        Shaper(1, 5, 0, now=0.0)


# --- config errors -------------------------------------------------------------

def test_bad_network_names_its_path():
    assert config_errors({"admin": {"ip": ["10.0.0.0/8", "x"]}}) == ["acl.admin.ip[1]: not an IP network: 'x'"]


def test_unknown_acl_in_rule_is_a_load_error():
    errors = config_errors({"admin": {"account": ["a"]}}, {"register": [{"allow": "local"}]})
    assert errors == ["access_rules.register[0].allow: unknown acl 'local' (defined: admin; builtin: all, none)"]


def test_unknown_acl_and_shaper_in_shaper_rules():
    errors = config_errors({}, {}, {"normal": {"bytes_per_second": 1, "messages_per_second": 1, "burst": 1}},
                           [{"normal": "all"}, {"fastt": "admins"}])
    assert errors == [
        "shaper_rules[1]: unknown shaper 'fastt' (defined: normal; builtin: none)",
        "shaper_rules[1].fastt: unknown acl 'admins' (defined: (none); builtin: all, none)",
    ]


def test_shaper_spec_errors():
    errors = config_errors(shapers={"normal": {"bytes_per_second": 0, "messages_per_second": "x", "burst": 0},
                                    "fast": {"bytes_per_second": 1, "messages_per_second": 1}})
    assert errors == [
        "shapers.normal.bytes_per_second: must be > 0",
        "shapers.normal.messages_per_second: must be a number",
        "shapers.normal.burst: must be >= 1",
        "shapers.fast.burst: required key is missing",
    ]


def test_bad_rule_lines():
    errors = config_errors({}, {"register": [{"allow": "all", "deny": "none"}, {"maybe": "all"}, {"allow": ["a"]}],
                                "oper": "allow"})
    assert errors == [
        "access_rules.register[0]: must be one 'allow: <acl>' or 'deny: <acl>'",
        "access_rules.register[1]: must be one 'allow: <acl>' or 'deny: <acl>', not 'maybe'",
        "access_rules.register[2]: allow: must name one acl",
        "access_rules.oper: must be a list",
    ]


def test_shape_errors():
    errors = config_errors({"admin": {"user": ["a"], "account": [1]}, "ops": None}, shaper_rules={"a": "b"})
    assert errors == [
        "acl.admin.account[0]: must be a string (quote values such as \"001\")",
        "acl.admin.user: unknown key",
        "acl.ops: must be a mapping",
        "shaper_rules: must be a list",
    ]


def test_reserved_names():
    errors = config_errors({"all": {"account": ["x"]}}, {SHAPER_RULES: []},
                           {"none": {"bytes_per_second": 1, "messages_per_second": 1, "burst": 1}})
    assert errors == [
        "acl.all: 'all' is a builtin acl and cannot be redefined",
        "shapers.none: 'none' is builtin (no shaping) and cannot be redefined",
        "access_rules.shaper_rules: the name is reserved for the shaper_rules section",
    ]


# --- schema for the main config ----------------------------------------------------

def test_schema_models_can_be_embedded():
    from pydantic import create_model

    # A config model built from ACL_SCHEMA validates the same sections.
    Section = create_model("Section", **{k: (t, ...) for k, t in ACL_SCHEMA.items()})
    sec = Section.model_validate({k: CONFIG[k] for k in ACL_SCHEMA})
    assert isinstance(sec.acl["admin"], AclEntry)
    assert isinstance(sec.shapers["normal"], ShaperSpec)
    assert sec.access_rules["everyone"] == [{"allow": "all"}]

    class Main(AclConfig):
        name: str = "x"

    main = Main.model_validate({k: CONFIG[k] for k in ACL_SCHEMA})
    assert Acl(main).allowed("oper", Subject(account="bob"))
