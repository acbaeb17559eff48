"""JIDs (RFC 7622 examples), XEP-0106 escaping, the name fold, and stanza serialisation per recipient class."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from bridges.xmpp import namespaces as ns
from bridges.xmpp.jid import (Jid, JidError, escape_localpart, fold_name, parse_jid, prep_localpart,
                              unescape_localpart)
from bridges.xmpp.stanza import Outgoing, element, serialise


@pytest.mark.parametrize("text,expected", [
    ("juliet@example.com", Jid("juliet", "example.com")),
    ("juliet@example.com/foo", Jid("juliet", "example.com", "foo")),
    ("juliet@example.com/foo bar", Jid("juliet", "example.com", "foo bar")),
    ("juliet@example.com/foo@bar", Jid("juliet", "example.com", "foo@bar")),
    ("foo\\20bar@example.com", Jid("foo\\20bar", "example.com")),
    ("fussball@example.com", Jid("fussball", "example.com")),
    ("fu\u00dfball@example.com", Jid("fu\u00dfball", "example.com")),
    ("\u03c0@example.com", Jid("\u03c0", "example.com")),
    ("\u03a3@example.com/foo", Jid("\u03c3", "example.com", "foo")),
    ("king@example.com/\u265a", Jid("king", "example.com", "\u265a")),
    ("Juliet@Example.COM./Balcony", Jid("juliet", "example.com", "Balcony")),
    ("example.com", Jid(None, "example.com")),
    ("example.com/foobar", Jid(None, "example.com", "foobar")),
    ("a.example.com/b@example.net", Jid(None, "a.example.com", "b@example.net")),
    ("[::1]/r", Jid(None, "[::1]", "r")),
])
def test_valid_jids(text, expected):
    assert parse_jid(text) == expected


@pytest.mark.parametrize("text", [
    "", "\"juliet\"@example.com", "foo bar@example.com", "juliet@example.com/", "@example.com/",
    "henry\u2163@example.com", "\u265a@example.com", "juliet@", "/foobar", "a@b c", "x" * 1024 + "@example.com",
    "a@" + "b" * 64 + ".com", "a@example..com", "a@exa<mple.com",
])
def test_invalid_jids(text):
    with pytest.raises(JidError):
        parse_jid(text)


def test_bare_full_and_str():
    jid = parse_jid("Romeo@Montague.lit/Orchard")
    assert str(jid) == "romeo@montague.lit/Orchard" and str(jid.bare) == "romeo@montague.lit"
    assert jid.bare.is_bare and not jid.is_bare
    assert jid.bare.with_resource("Balcony \u2163") == Jid("romeo", "montague.lit", "Balcony \u2163")


@pytest.mark.parametrize("name,escaped", [
    ("space cadet", "space\\20cadet"), ('call me "ishmael"', "call\\20me\\20\\22ishmael\\22"),
    ("at&t guy", "at\\26t\\20guy"), ("d'artagnan", "d\\27artagnan"), ("/.fanboy", "\\2f.fanboy"),
    ("::foo::", "\\3a\\3afoo\\3a\\3a"), ("<foo>", "\\3cfoo\\3e"), ("user@host", "user\\40host"),
    ("c:\\net", "c\\3a\\net"), ("c:\\\\net", "c\\3a\\\\net"), ("c:\\cool stuff", "c\\3a\\cool\\20stuff"),
    ("c:\\5commas", "c\\3a\\5c5commas"),
])
def test_xep0106_examples(name, escaped):
    assert escape_localpart(name) == escaped
    assert unescape_localpart(escaped) == name
    prep_localpart(escaped.lower())        # an escaped name is a valid localpart


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)
       .filter(lambda s: not s.startswith(" ") and not s.endswith(" ")))
def test_escaping_round_trips(name):
    assert unescape_localpart(escape_localpart(name)) == name


def test_fold_name():
    assert fold_name("Stra\u00dfe") == fold_name("STRASSE") == "strasse"
    assert fold_name("\uff21lice") == fold_name("alice")
    assert fold_name("\u212a") == "k"
    assert fold_name("\u0430") != fold_name("a")        # confusables are not folded (documented)


# -- serialisation ---------------------------------------------------------------------------------

def _parsed(xml: bytes) -> etree._Element:
    return etree.fromstring(xml)


MSG = b"<message xmlns='jabber:client' to='a@localhost/x' from='b@localhost/y' type='chat'><body>hi</body></message>"


def test_serialise_per_class():
    el = _parsed(MSG)
    assert serialise(el) == b'<message to="a@localhost/x" from="b@localhost/y" type="chat"><body>hi</body></message>'
    assert serialise(el, websocket=True).startswith(b'<message xmlns="jabber:client" to=')
    component = serialise(el, ns.COMPONENT)
    assert component.startswith(b'<message to=') and b"jabber:client" not in component
    back = etree.fromstring(b"<x xmlns='jabber:component:accept'>" + component + b"</x>")[0]
    assert back.tag == "{jabber:component:accept}message" and back[0].tag == "{jabber:component:accept}body"


def test_serialise_component_stanza_for_a_client_keeps_foreign_namespaces():
    el = _parsed(b"<message xmlns='jabber:component:accept' to='a@localhost'><body>x</body>"
                 b"<x xmlns='jabber:x:oob'><url>u</url></x></message>")
    out = serialise(el, ns.CLIENT, websocket=True)
    again = etree.fromstring(out)
    assert [e.tag for e in again.iter()] == ["{jabber:client}message", "{jabber:client}body", "{jabber:x:oob}x",
                                             "{jabber:x:oob}url"]


def test_element_built_without_nsmap_gets_no_made_up_prefix():
    el = etree.Element("{jabber:client}iq", type="result", id="1")
    assert serialise(el) == b'<iq type="result" id="1"/>'
    assert serialise(element("iq", {"type": "result", "id": "1", "to": None})) == b'<iq type="result" id="1"/>'


@pytest.mark.parametrize("to", ["a@localhost/x", 'c@localhost/"quoted" & <tag>', "d@localhost/\u00e9\n"])
def test_to_splice_equals_full_serialisation(to):
    el = _parsed(MSG)
    out = Outgoing(el)
    for websocket in (False, True):
        expected = _parsed(MSG)
        expected.set("to", to)
        spliced = out.bytes_to(to, websocket=websocket)
        assert etree.fromstring(spliced.replace(b"<message", b"<message xmlns='jabber:client'", 1)
                                if not websocket else spliced).attrib == expected.attrib
        assert spliced == serialise(_moved_to_front(expected, to), websocket=websocket)
    assert el.get("to") == "a@localhost/x"          # the element itself is left as it was
    assert out.bytes_for() is out.bytes_for()        # serialised once per class


def _moved_to_front(el: etree._Element, to: str) -> etree._Element:
    attrs = {k: v for k, v in el.attrib.items() if k != "to"}
    el.attrib.clear()
    el.set("to", to)
    for k, v in attrs.items():
        el.set(k, v)
    return el
