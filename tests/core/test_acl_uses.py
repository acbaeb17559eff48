"""The access rules where they are used: registration, channel creation, operators, links."""

from support_net import Wire


def test_register_rule_gates_in_band_registration(tmp_path):
    w = Wire(tmp_path, ["a"], access_rules={"register": [{"deny": "local"}, {"allow": "all"}],
                                             "create_channel": [{"allow": "all"}], "oper": [{"allow": "all"}]})
    c = w.client("a", "alice")
    c.send("REGISTER alice * pw12345")
    assert any("FAIL REGISTER TEMPORARILY_UNAVAILABLE" in l for l in c.t.take())
    w2 = Wire(tmp_path / "2", ["a"])
    c2 = w2.client("a", "bob")
    c2.send("REGISTER * * s3cret-pw")
    lines = c2.t.take()
    assert any("REGISTER SUCCESS bob" in l for l in lines) and any(" 900 " in l for l in lines)
    assert w2.cores["a"].accounts.get("bob") is not None
    c2.send("REGISTER bob * other")
    assert any("FAIL REGISTER ALREADY_AUTHENTICATED" in l for l in c2.t.take())


def test_create_channel_rule(tmp_path):
    w = Wire(tmp_path, ["a"], acl={"staff": {"account": ["boss"]}},
             access_rules={"create_channel": [{"allow": "staff"}], "oper": [{"allow": "all"}],
                           "register": [{"allow": "all"}]})
    c = w.client("a", "pleb")
    c.send("JOIN #new")
    assert any(" 403 pleb #new" in l for l in c.t.take())
    boss = w.client("a", "boss")
    boss.session.account = boss.user.account = "boss"
    boss.send("JOIN #new")
    c.send("JOIN #new")              # existing channels may be joined
    assert any("JOIN #new" in l for l in c.t.take())


def test_oper_rule_and_password(tmp_path):
    from relay.core.passwords import hash_password as hash_oper_password
    h = hash_oper_password("operpw", b"0123456789abcdef")
    w = Wire(tmp_path, ["a"], irc={"opers": [{"name": "root", "password": h}]},
             acl={"admins": {"account": ["alice"]}},
             access_rules={"oper": [{"allow": "admins"}], "create_channel": [{"allow": "all"}]})
    c = w.client("a", "mallory")
    c.send("OPER root wrong")
    assert any(" 464 " in l for l in c.t.take())
    c.send("OPER root operpw")
    assert any(" 491 " in l for l in c.t.take())      # right password, but the rule denies this subject
    a = w.client("a", "alice")
    a.session.account = a.user.account = "alice"
    a.send("OPER root operpw")
    assert any(" 381 " in l for l in a.t.take()) and "o" in a.user.modes


def test_link_rule_refuses_servers_from_unlisted_addresses(tmp_path):
    w = Wire(tmp_path, ["a", "b"], acl={"trusted": {"ip": ["10.0.0.0/8"]}},
             access_rules={"link": [{"allow": "trusted"}], "create_channel": [{"allow": "all"}]})
    w.link("a", "b")   # the in-memory peer address is 127.0.0.1
    assert not w.cores["b"].links.peers
    assert "access rule 'link'" in " ".join(w.cores["b"].links.last_error.values())


def test_server_password(tmp_path):
    from support_net import FakeClientTransport
    w = Wire(tmp_path, ["a"], irc={"password": "letmein"})
    bad = FakeClientTransport()
    w.cores["a"].services["irc"].new_client(bad, None, w.now).data_received(b"NICK bad\r\nUSER b 0 * :B\r\n", w.now)
    assert bad.closed and any(" 464 " in l for l in bad.lines()) and any("ERROR" in l for l in bad.lines())
    t = FakeClientTransport()
    s = w.cores["a"].services["irc"].new_client(t, None, w.now)
    s.data_received(b"PASS letmein\r\nNICK good\r\nUSER g 0 * :G\r\n", w.now)
    assert any(" 001 good " in l for l in t.lines()) and not t.closed
