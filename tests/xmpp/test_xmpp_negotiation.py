"""c2s negotiation and the XEP-0114 handshake from bytes, as a real client (slixmpp) sends them."""

from __future__ import annotations

import base64

import pytest
from lxml import etree
from xmppcodec_support import DOMAIN, test_policy

from bridges.xmpp import namespaces as ns
from bridges.xmpp.jid import Jid
from bridges.xmpp.negotiation import (Authenticated, Bound, C2sNegotiation, CloseStream, ComponentNegotiation,
                                      SendBytes, Stage, StartTls, handshake_digest)
from bridges.xmpp.stream import StanzaReceived, StreamErrorReceived, StreamOpened, XmppStream

# What slixmpp 1.8+ sends, step by step (header attribute order as it writes it).
CLIENT_HEADER = (b"<stream:stream to='localhost' xmlns:stream='http://etherx.jabber.org/streams' "
                 b"xmlns='jabber:client' xml:lang='en' version='1.0'>")
STARTTLS = b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls' />"
AUTH = (b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
        + base64.b64encode(b"\0alice\0secret") + b"</auth>")
BIND = (b"<iq id='b1' type='set'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>phone</resource>"
        b"</bind></iq>")
SESSION = b"<iq id='s1' type='set'><session xmlns='urn:ietf:params:xml:ns:xmpp-session' /></iq>"
ENABLE = b"<enable xmlns='urn:xmpp:sm:3' resume='true' />"
PRESENCE = b"<presence><priority>1</priority></presence>"


class Client:
    """The client's view: parses what the server sends, restarting where a real client would."""

    def __init__(self):
        self.stream = XmppStream(server_side=False)

    def read(self, effects) -> list:
        events = []
        for effect in effects:
            if isinstance(effect, SendBytes):
                events.extend(self.stream.receive_data(effect.data))
        return events

    def restart(self):
        self.stream.restart()


def _others(effects):
    return [e for e in effects if not isinstance(e, SendBytes)]


def _tags(events):
    return [e.element.tag if isinstance(e, StanzaReceived) else type(e).__name__ for e in events]


def _negotiate_to_bound(neg: C2sNegotiation, client: Client):
    client.read(neg.receive_data(CLIENT_HEADER))
    effects = neg.receive_data(STARTTLS)
    assert _others(effects) == [StartTls()]
    neg.tls_started()
    client.restart()
    client.read(neg.receive_data(CLIENT_HEADER))
    effects = neg.receive_data(AUTH)
    assert _others(effects) == [Authenticated(Jid("alice", DOMAIN))]
    client.restart()
    client.read(effects)
    client.read(neg.receive_data(CLIENT_HEADER))
    effects = neg.receive_data(BIND)
    assert _others(effects) == [Bound(Jid("alice", DOMAIN, "phone"))]
    return effects


def test_full_c2s_transcript():
    neg, client = C2sNegotiation(test_policy()), Client()

    events = client.read(neg.receive_data(CLIENT_HEADER))
    assert isinstance(events[0], StreamOpened) and events[0].attrs["from"] == DOMAIN and events[0].attrs["id"] == "id1"
    features = events[1].element
    assert features.tag == "{%s}features" % ns.STREAMS
    assert [(c.tag, [g.tag for g in c]) for c in features] == [("{%s}starttls" % ns.TLS, ["{%s}required" % ns.TLS])]

    effects = neg.receive_data(STARTTLS)
    assert _tags(client.read(effects)) == ["{%s}proceed" % ns.TLS]
    assert _others(effects) == [StartTls()] and neg.stage is Stage.TLS
    neg.tls_started()
    client.restart()

    events = client.read(neg.receive_data(CLIENT_HEADER))
    mechanisms = events[1].element.find("{%s}mechanisms" % ns.SASL)
    assert [m.text for m in mechanisms] == ["PLAIN"] and events[1].element.find("{%s}starttls" % ns.TLS) is None

    effects = neg.receive_data(AUTH)
    assert _tags(client.read(effects)) == ["{%s}success" % ns.SASL]
    assert _others(effects) == [Authenticated(Jid("alice", DOMAIN))]
    client.restart()

    events = client.read(neg.receive_data(CLIENT_HEADER))
    assert [c.tag for c in events[1].element] == [
        "{%s}bind" % ns.BIND, "{%s}session" % ns.SESSION, "{%s}sm" % ns.SM, "{%s}csi" % ns.CSI,
        "{%s}ver" % ns.ROSTERVER]

    effects = neg.receive_data(BIND)
    (reply,) = client.read(effects)
    assert reply.element.get("type") == "result" and reply.element.get("id") == "b1"
    assert reply.element.findtext("{%s}bind/{%s}jid" % (ns.BIND, ns.BIND)) == "alice@localhost/phone"
    assert _others(effects) == [Bound(Jid("alice", DOMAIN, "phone"))]
    assert neg.stage is Stage.ESTABLISHED

    (reply,) = client.read(neg.receive_data(SESSION))
    assert (reply.element.get("type"), reply.element.get("id")) == ("result", "s1")

    effects = neg.receive_data(ENABLE + PRESENCE)
    assert _tags(effects) == ["{%s}enable" % ns.SM, "{jabber:client}presence"]

    effects = neg.receive_data(b"</stream:stream>")
    assert effects == [SendBytes(b"</stream:stream>"), CloseStream()]


def test_transcript_byte_by_byte_gives_the_same_bytes_and_effects():
    def run(split: bool):
        neg = C2sNegotiation(test_policy())
        out = []
        for step in (CLIENT_HEADER, STARTTLS, None, CLIENT_HEADER, AUTH, CLIENT_HEADER, BIND, SESSION, PRESENCE):
            if step is None:
                neg.tls_started()
                continue
            pieces = [step[i:i + 1] for i in range(len(step))] if split else [step]
            for piece in pieces:
                out.extend(etree.tostring(e.element) if isinstance(e, StanzaReceived) else e
                           for e in neg.receive_data(piece))
        return out

    assert run(True) == run(False)


def test_plaintext_after_starttls_is_never_processed():
    neg = C2sNegotiation(test_policy())
    neg.receive_data(CLIENT_HEADER)
    effects = neg.receive_data(STARTTLS + AUTH)           # injected plaintext after <starttls/>
    assert _others(effects) == [StartTls()]
    assert neg.receive_data(AUTH) == []
    neg.tls_started()
    assert neg.jid is None


def test_direct_tls_offers_sasl_at_once():
    neg, client = C2sNegotiation(test_policy(), secure=True), Client()
    features = client.read(neg.receive_data(CLIENT_HEADER))[1].element
    assert [c.tag for c in features] == ["{%s}mechanisms" % ns.SASL]


def _failure(effects, client) -> str:
    (ev,) = [e for e in client.read(effects) if isinstance(e, StanzaReceived)]
    assert ev.element.tag == "{%s}failure" % ns.SASL
    return etree.QName(ev.element[0]).localname


def _secure_features(policy=None):
    neg, client = C2sNegotiation(policy or test_policy(), secure=True), Client()
    client.read(neg.receive_data(CLIENT_HEADER))
    return neg, client


@pytest.mark.parametrize("auth,condition", [
    (AUTH.replace(base64.b64encode(b"\0alice\0secret"), base64.b64encode(b"\0alice\0wrong")), "not-authorized"),
    (AUTH.replace(base64.b64encode(b"\0alice\0secret"), base64.b64encode(b"bob\0alice\0secret")), "invalid-authzid"),
    (AUTH.replace(b"PLAIN", b"SCRAM-SHA-1"), "invalid-mechanism"),
    (AUTH.replace(base64.b64encode(b"\0alice\0secret"), b"!!notbase64"), "incorrect-encoding"),
    (b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>=</auth>", "malformed-request"),
])
def test_sasl_failures_then_retry(auth, condition):
    neg, client = _secure_features()
    assert _failure(neg.receive_data(auth), client) == condition
    assert neg.stage is Stage.FEATURES
    assert _others(neg.receive_data(AUTH)) == [Authenticated(Jid("alice", DOMAIN))]


def test_too_many_failures_close_the_stream():
    neg, client = _secure_features()
    bad = AUTH.replace(base64.b64encode(b"\0alice\0secret"), base64.b64encode(b"\0alice\0x"))
    neg.receive_data(bad)
    neg.receive_data(bad)
    effects = neg.receive_data(bad)
    assert _others(effects) == [CloseStream("policy-violation")]
    assert [e for e in client.read(effects) if isinstance(e, StreamErrorReceived)][0].condition == "policy-violation"


def test_auth_without_initial_response_and_abort():
    neg, client = _secure_features()
    (ev,) = client.read(neg.receive_data(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'/>"))
    assert ev.element.tag == "{%s}challenge" % ns.SASL and not ev.element.text
    effects = neg.receive_data(b"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                               + base64.b64encode(b"\0bob\0hunter2") + b"</response>")
    assert _others(effects) == [Authenticated(Jid("bob", DOMAIN))]

    neg, client = _secure_features()
    neg.receive_data(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'/>")
    assert _failure(neg.receive_data(b"<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"), client) == "aborted"


def test_auth_before_starttls_when_required():
    neg, client = C2sNegotiation(test_policy(sasl_mechanisms=lambda secure: {"PLAIN": None})), Client()
    client.read(neg.receive_data(CLIENT_HEADER))
    assert _failure(neg.receive_data(AUTH), client) == "encryption-required"


def test_tls_optional_offers_both():
    neg, client = C2sNegotiation(test_policy(tls_required=False, sasl_mechanisms=lambda s: {"X": None})), Client()
    features = client.read(neg.receive_data(CLIENT_HEADER))[1].element
    assert [c.tag for c in features] == ["{%s}starttls" % ns.TLS, "{%s}mechanisms" % ns.SASL]
    assert len(features[0]) == 0                          # no <required/>


@pytest.mark.parametrize("data", [PRESENCE, BIND, b"<message to='bob@localhost'><body>x</body></message>"])
def test_stanza_before_authentication_is_not_authorized(data):
    neg, client = _secure_features()
    effects = neg.receive_data(data)
    assert _others(effects) == [CloseStream("not-authorized")]


def test_stanza_before_bind_is_not_authorized():
    neg, client = _secure_features()
    neg.receive_data(AUTH)
    neg.receive_data(CLIENT_HEADER)
    assert _others(neg.receive_data(PRESENCE)) == [CloseStream("not-authorized")]


def _bound(policy, bind=BIND):
    neg, client = _secure_features(policy)
    neg.receive_data(AUTH)
    client.restart()
    client.read(neg.receive_data(CLIENT_HEADER))
    effects = neg.receive_data(bind)
    return neg, client, effects


def test_bind_without_resource_gets_a_generated_one():
    empty_bind = b"<iq id='b' type='set'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"
    neg, client, effects = _bound(test_policy(), empty_bind)
    assert _others(effects) == [Bound(Jid("alice", DOMAIN, "generated"))]


def test_bind_conflict_policies():
    neg, client, effects = _bound(test_policy(bind=lambda full: None))
    (reply,) = client.read(effects)
    assert reply.element.get("type") == "error" and reply.element.find(
        "{jabber:client}error/{%s}conflict" % ns.STANZA_ERRORS) is not None
    assert neg.stage is Stage.BIND
    neg, client, effects = _bound(test_policy(bind=lambda full: full.with_resource(full.resource + "-2")))
    assert _others(effects) == [Bound(Jid("alice", DOMAIN, "phone-2"))]


def test_second_bind_is_not_allowed_and_stanzas_pass_after_bind():
    neg, client, _ = _bound(test_policy())
    (reply,) = client.read(neg.receive_data(BIND.replace(b"b1", b"b2")))
    assert reply.element.get("type") == "error"
    effects = neg.receive_data(b"<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
    assert _tags(effects) == ["{jabber:client}iq"]


@pytest.mark.parametrize("data", [
    b"<stream:stream/>", b"<foo/>", b"<features xmlns='http://etherx.jabber.org/streams'/>",
    b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>=</auth>",
])
def test_unknown_top_level_element_after_bind(data):
    neg, client, _ = _bound(test_policy())
    condition = "policy-violation" if b"auth" in data else "unsupported-stanza-type"
    assert _others(neg.receive_data(data)) == [CloseStream(condition)]


def test_csi_and_sm_pass_after_bind():
    neg, client, _ = _bound(test_policy())
    effects = neg.receive_data(b"<inactive xmlns='urn:xmpp:csi:0'/><r xmlns='urn:xmpp:sm:3'/>")
    assert _tags(effects) == ["{urn:xmpp:csi:0}inactive", "{urn:xmpp:sm:3}r"]


def test_unknown_host_and_bad_header():
    neg, client = C2sNegotiation(test_policy()), Client()
    effects = neg.receive_data(CLIENT_HEADER.replace(b"localhost", b"example.org"))
    assert _others(effects) == [CloseStream("host-unknown")]
    assert [e.condition for e in client.read(effects) if isinstance(e, StreamErrorReceived)] == ["host-unknown"]
    neg = C2sNegotiation(test_policy())
    assert _others(neg.receive_data(CLIENT_HEADER.replace(b"1.0", b"0.9"))) == [CloseStream("unsupported-version")]
    assert neg.receive_data(CLIENT_HEADER) == []          # closed: nothing more


# -- XEP-0114 ----------------------------------------------------------------------------------------

COMPONENT_HEADER = (b"<stream:stream xmlns='jabber:component:accept' "
                    b"xmlns:stream='http://etherx.jabber.org/streams' to='bot.localhost'>")


def _component():
    neg = ComponentNegotiation(lambda domain: "s3cret" if domain == "bot.localhost" else None,
                               new_id=lambda: "3BF96D32")
    client = XmppStream(server_side=False, content_ns=ns.COMPONENT)
    events = client.receive_data(neg.receive_data(COMPONENT_HEADER)[0].data)
    assert events[0].attrs == {"from": "bot.localhost", "id": "3BF96D32"}
    return neg, client


def test_component_handshake():
    neg, client = _component()
    digest = handshake_digest("3BF96D32", "s3cret").encode()
    effects = neg.receive_data(b"<handshake>" + digest + b"</handshake>")
    assert _others(effects) == [Authenticated(Jid(None, "bot.localhost"))]
    assert client.receive_data(effects[0].data)[0].element.tag == "{jabber:component:accept}handshake"
    effects = neg.receive_data(b"<message from='x@bot.localhost' to='alice@localhost'><body>hi</body></message>")
    assert _tags(effects) == ["{jabber:component:accept}message"]


def test_component_wrong_secret_and_unknown_domain():
    neg, client = _component()
    effects = neg.receive_data(b"<handshake>" + handshake_digest("3BF96D32", "wrong").encode() + b"</handshake>")
    assert _others(effects) == [CloseStream("not-authorized")]
    neg, _ = _component()
    assert _others(neg.receive_data(b"<message/>")) == [CloseStream("not-authorized")]
    neg = ComponentNegotiation(lambda domain: None)
    assert _others(neg.receive_data(COMPONENT_HEADER)) == [CloseStream("host-unknown")]


# -- fuzzing: whatever a client sends at whatever stage, only effects come out ------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_STEPS = [CLIENT_HEADER, STARTTLS, AUTH, BIND, SESSION, ENABLE, PRESENCE, b"</stream:stream>",
          b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'/>",
          b"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>AGFsaWNlAHNlY3JldA==</response>",
          b"<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>", b"<handshake>00</handshake>", None]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_STEPS) | st.binary(max_size=30), max_size=12), st.booleans())
def test_any_sequence_gives_only_effects(steps, secure):
    neg = C2sNegotiation(test_policy(), secure=secure)
    component = ComponentNegotiation(lambda d: "s", new_id=lambda: "i")
    for step in steps:
        if step is None:
            if neg.stage is Stage.TLS:
                neg.tls_started()
            continue
        for effect in neg.receive_data(step) + component.receive_data(step):
            assert isinstance(effect, (SendBytes, StartTls, Authenticated, Bound, CloseStream, StanzaReceived))


def test_websocket_negotiation():
    # RFC 7395: TLS is the WebSocket's (wss), so the stream starts secure; each call is one message.
    neg = C2sNegotiation(test_policy(tls_available=False), secure=True, framing="websocket")
    client = XmppStream(server_side=False, framing="websocket")
    open_ = b'<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="localhost" version="1.0"/>'

    def exchange(message):
        effects = neg.receive_data(message)
        events = [ev for e in effects if isinstance(e, SendBytes) for ev in client.receive_data(e.data)]
        return effects, events

    effects, events = exchange(open_)
    assert [type(e) for e in events] == [StreamOpened, StanzaReceived]
    assert [e.data[:5] for e in effects] == [b"<open", b"<stre"]     # one message per SendBytes
    assert [m.text for m in events[1].element.find("{%s}mechanisms" % ns.SASL)] == ["PLAIN"]
    effects, _ = exchange(AUTH)
    assert _others(effects) == [Authenticated(Jid("alice", DOMAIN))]
    client.restart()
    exchange(open_)
    effects, events = exchange(BIND.replace(b"<iq ", b"<iq xmlns='jabber:client' ", 1))
    assert _others(effects) == [Bound(Jid("alice", DOMAIN, "phone"))]
    assert events[0].element.findtext("{%s}bind/{%s}jid" % (ns.BIND, ns.BIND)) == "alice@localhost/phone"
    effects, _ = exchange(b'<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>')
    assert effects == [SendBytes(b'<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>'), CloseStream()]
