"""XEP-0049 private XML storage in memory from bytes: set and get by namespace, the empty answer,
the refused namespaces, the size and count limits, and that one account cannot read another's."""

from __future__ import annotations

import pytest
from xmpp_ext_support import Xmpp, error_of, wire

P = "jabber:iq:private"


@pytest.fixture
def w(tmp_path):
    return wire(tmp_path, private_max_bytes=512, private_max_items=2)


def _get(c, inner: str, to: str = ""):
    return c.iq(f"<iq type='get' id='g'{to}><query xmlns='{P}'>{inner}</query></iq>")


def test_set_and_get_by_namespace(w):
    alice = Xmpp(w).login("alice")
    empty = _get(alice, "<prefs xmlns='x:prefs'/>")
    assert empty.get("type") == "result"
    assert [c.tag for c in empty[0]] == ["{x:prefs}prefs"] and len(empty[0][0]) == 0
    ok = alice.iq(f"<iq type='set' id='s'><query xmlns='{P}'><prefs xmlns='x:prefs'><a>1</a></prefs>"
                  "<storage xmlns='storage:bookmarks'><conference jid='r@conference.localhost'/></storage>"
                  "</query></iq>")
    assert ok.get("type") == "result"
    got = _get(alice, "<prefs xmlns='x:prefs'/>")
    assert got[0][0].findtext("{x:prefs}a") == "1"
    marks = _get(alice, "<storage xmlns='storage:bookmarks'/>")
    assert marks[0][0][0].get("jid") == "r@conference.localhost"
    # Bob sees his own (empty), never alice's.
    bob = Xmpp(w).login("bob")
    assert len(_get(bob, "<prefs xmlns='x:prefs'/>")[0][0]) == 0
    assert error_of(_get(bob, "<prefs xmlns='x:prefs'/>", " to='alice@localhost'")) is not None


@pytest.mark.parametrize("inner", ["<body xmlns='jabber:client'/>", f"<query xmlns='{P}'/>", "<plain xmlns=''/>",
                                   ""])
def test_refused_namespaces_are_not_acceptable(w, inner):
    alice = Xmpp(w).login("alice")
    assert error_of(alice.iq(f"<iq type='set' id='s'><query xmlns='{P}'>{inner}</query></iq>")) == "not-acceptable"
    if inner:
        assert error_of(_get(alice, inner)) == "not-acceptable"


def test_size_and_count_limits(w):
    alice = Xmpp(w).login("alice")
    big = alice.iq(f"<iq type='set' id='s'><query xmlns='{P}'><a xmlns='x:a'>{'y' * 600}</a></query></iq>")
    assert error_of(big) == "not-acceptable"
    for n in ("a", "b"):
        assert alice.iq(f"<iq type='set' id='s'><query xmlns='{P}'><a xmlns='x:{n}'/></query></iq>").get(
            "type") == "result"
    third = alice.iq(f"<iq type='set' id='s'><query xmlns='{P}'><a xmlns='x:c'/></query></iq>")
    assert error_of(third) == "not-acceptable"
    again = alice.iq(f"<iq type='set' id='s'><query xmlns='{P}'><a xmlns='x:a'>new</a></query></iq>")
    assert again.get("type") == "result"              # replacing one already kept is not a new one
    assert _get(alice, "<a xmlns='x:a'/>")[0][0].text == "new"


def test_private_data_is_the_same_on_every_server(tmp_path):
    w = wire(tmp_path, names=("a", "b", "c"))
    w.link("a", "b")
    on_a = Xmpp(w, "a").login("alice")
    on_a.iq(f"<iq type='set' id='s'><query xmlns='{P}'><prefs xmlns='x:prefs'><a>1</a></prefs></query></iq>")
    assert _get(Xmpp(w, "b").login("alice", resource="b"), "<prefs xmlns='x:prefs'/>")[0][0].findtext(
        "{x:prefs}a") == "1"
    w.link("c", "b")                                   # joins later: the index brings it
    w.tick(1)
    on_c = Xmpp(w, "c").login("alice", resource="c")
    assert _get(on_c, "<prefs xmlns='x:prefs'/>")[0][0].findtext("{x:prefs}a") == "1"
    w.tick(1)
    on_c.iq(f"<iq type='set' id='s'><query xmlns='{P}'><prefs xmlns='x:prefs'><a>2</a></prefs></query></iq>")
    assert _get(on_a, "<prefs xmlns='x:prefs'/>")[0][0].findtext("{x:prefs}a") == "2"
