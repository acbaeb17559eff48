"""The bridged-member helper: unique nicks, joins through the channel policy, the speak check, quits."""

import pytest
from support_net import Wire

from relay.core.members import BridgedMembers, SpeakRefused, speak_refusal_text
from relay.core.network import JoinRefused


class FakeSession:
    proto = "fake"

    def __init__(self):
        self.events = []

    def deliver(self, ev):
        self.events.append(ev)

    def direct_refusal(self):
        return None

    def server_closing(self, reason, now):
        pass


@pytest.fixture
def w(tmp_path):
    w = Wire(tmp_path, ["a", "b"])
    w.link("a", "b")
    return w


def members(core):
    return BridgedMembers(core.net, "fake", core.config)


def test_unique_nick_within_nicklen(w):
    m = members(w.cores["a"])
    w.client("b", "alice")   # taken on the other server: nicks are network-wide
    w.client("a", "longnamex")
    assert m.unique_nick("alice") == "alice1"
    assert m.unique_nick("longnamexyz") == "longname1"
    assert m.unique_nick("9lives") == "f9lives"           # a nick cannot start with a digit
    assert m.unique_nick("a b@c") == "a_b_c"
    assert m.unique_nick(None) == "fake"


def test_member_is_introduced_with_its_attributes_everywhere(w):
    m = members(w.cores["a"])
    s = FakeSession()
    u = m.introduce(s, "dave", w.now, account="dave", ip="127.0.0.1", realname="Dave (fake)",
                    attrs={"client_id": "c-1"})
    w.pump()
    assert u.host == "fake.a.test" and u.proto == "fake"
    remote = w.cores["b"].net.find_nick("dave")
    assert remote.attrs == {"fake": {"client_id": "c-1"}} and remote.account == "dave"
    w.cores["a"].net.set_attrs(u, "fake", {"client_id": "c-2"}, w.now)
    w.pump()
    assert w.cores["b"].net.find_nick("dave").attrs == {"fake": {"client_id": "c-2"}}


def test_join_speak_and_leave_through_the_channel_policy(w):
    core = w.cores["a"]
    m = members(core)
    bob = w.client("b", "bob")
    bob.send("JOIN #room", "MODE #room +m")
    s = FakeSession()
    u = m.introduce(s, "eve", w.now, account=None, ip=None, realname="Eve")
    m.join(u, "#room", w.now)
    w.pump()
    assert any(":eve!eve@fake.a.test JOIN #room" in line for line in bob.t.take())
    with pytest.raises(SpeakRefused) as e:
        m.speak(u, "#room", "hello", w.now)
    assert e.value.code == "moderated" and "moderated" in speak_refusal_text(e.value)
    bob.send("MODE #room +v eve")
    m.speak(u, "#room", "hello there", w.now)
    w.pump()
    lines = bob.t.take()
    assert any(line.endswith("PRIVMSG #room :hello there") for line in lines), lines
    with pytest.raises(SpeakRefused) as e:
        m.speak(u, "#nowhere", "x", w.now)
    assert e.value.code == "no_such_channel"
    assert m.leave(u, "#ROOM", "bye", w.now)
    w.pump()
    assert any(line.endswith("PART #room bye") for line in bob.t.take())
    m.quit(u, "gone", w.now)
    w.pump()
    assert w.cores["b"].net.find_nick("eve") is None


def test_join_refusals_name_their_reason(w):
    core = w.cores["a"]
    m = members(core)
    bob = w.client("a", "bob")
    bob.send("JOIN #locked", "MODE #locked +i", "JOIN #banned", "MODE #banned +b *!*@fake.a.test")
    u = m.introduce(FakeSession(), "mal", w.now, account=None, ip=None, realname="M")
    for name, code in (("#locked", "invite_only"), ("#banned", "banned"), ("bad name", "bad_name")):
        with pytest.raises(JoinRefused) as e:
            m.join(u, name, w.now)
        assert e.value.code == code
    with pytest.raises(SpeakRefused) as e:
        m.speak(u, "#banned", "x", w.now)
    assert e.value.code == "not_member"
