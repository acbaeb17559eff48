"""The shared SASL code (relay.core.sasl), driven by scramp's client: every mechanism, every refusal."""

import pytest
from scramp import ScramClient

from relay.core.accounts import Account, scram_secret
from relay.core.sasl import (Challenge, Failed, SaslServer, Succeeded, choose_binding, offered_mechanisms,
                             server_end_point)

ACCT = Account("alice", {m: scram_secret("pw", m, 4096) for m in ("SCRAM-SHA-1", "SCRAM-SHA-256")}, "", "r",
               frozenset(), 0.0)
BIND = {"tls-server-end-point": b"\x01" * 32}


def lookup(name):
    return ACCT if name == "alice" else None


def scram_exchange(mech, password="pw", client_binding=None, server_bindings=None, user="alice"):
    c = ScramClient([mech], user, password, channel_binding=client_binding)
    s = SaslServer(mech, lookup, tls=True, bindings=server_bindings)
    first = s.step(c.get_client_first().encode())
    if type(first) is not Challenge:
        return first, c
    c.set_server_first(first.data.decode())
    return s.step(c.get_client_final().encode()), c


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_scram_success_and_server_signature(mech):
    out, c = scram_exchange(mech)
    assert type(out) is Succeeded and out.account == "alice"
    c.set_server_final(out.data.decode())  # raises if the server's signature is wrong


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"])
def test_scram_plus_binds_to_the_channel(mech):
    good = ("tls-server-end-point", BIND["tls-server-end-point"])
    out, c = scram_exchange(mech, client_binding=good, server_bindings=BIND)
    assert type(out) is Succeeded
    c.set_server_final(out.data.decode())
    # A man in the middle terminates TLS itself: the client sees another certificate.
    out, _ = scram_exchange(mech, client_binding=("tls-server-end-point", b"\x02" * 32), server_bindings=BIND)
    assert type(out) is Failed and out.condition == "not-authorized"


def test_plus_is_not_offered_without_a_binding():
    out, _ = scram_exchange("SCRAM-SHA-256-PLUS", client_binding=("tls-server-end-point", b"x"))
    assert type(out) is Failed and out.condition == "invalid-mechanism"
    assert "SCRAM-SHA-256-PLUS" not in offered_mechanisms(True, {})
    assert offered_mechanisms(True, BIND)[0] == "SCRAM-SHA-256-PLUS"


def test_downgrade_is_detected():
    """A client that could bind says "y": with a server that can, someone stripped -PLUS from the offer."""
    s = SaslServer("SCRAM-SHA-256", lookup, tls=True, bindings=BIND)
    out = s.step(b"y,,n=alice,r=abcdefghijkl")
    assert type(out) is Failed and out.condition == "not-authorized"


@pytest.mark.parametrize("password,user", [("wrong", "alice"), ("pw", "nobody")])
def test_scram_refuses_bad_password_and_unknown_user(password, user):
    out, _ = scram_exchange("SCRAM-SHA-256", password=password, user=user)
    assert type(out) is Failed and out.condition == "not-authorized"


def test_plain():
    assert SaslServer("PLAIN", lookup, tls=True).step(b"\0alice\0pw") == Succeeded("alice")
    assert SaslServer("PLAIN", lookup, tls=True).step(b"alice\0alice\0pw") == Succeeded("alice")
    assert SaslServer("PLAIN", lookup, tls=True).step(b"\0alice\0nope").condition == "not-authorized"
    assert SaslServer("PLAIN", lookup, tls=True).step(b"bob\0alice\0pw").condition == "invalid-authzid"
    assert SaslServer("PLAIN", lookup, tls=False).step(b"\0alice\0pw").condition == "encryption-required"
    assert SaslServer("PLAIN", lookup, tls=False, plain_needs_tls=False).step(b"\0alice\0pw") == Succeeded("alice")
    assert "PLAIN" not in offered_mechanisms(False, None)
    # No initial response: an empty challenge asks for it.
    s = SaslServer("PLAIN", lookup, tls=True)
    assert s.step(None) == Challenge(b"")
    assert s.step(b"\0alice\0pw") == Succeeded("alice")


@pytest.mark.parametrize("data", [b"", b"\0", b"a\0b", b"\xff\xfe", b"\0alice\0pw\0extra", b"x" * 10000])
def test_plain_malformed(data):
    out = SaslServer("PLAIN", lookup, tls=True).step(data) if data else None
    if out is not None:
        assert type(out) is Failed


@pytest.mark.parametrize("data", [b"\xff", b"n,,", b"garbage", b"n,,n=alice", b"p=tls-unique,,n=alice,r=x"])
def test_scram_malformed_first_message_fails_cleanly(data):
    out = SaslServer("SCRAM-SHA-256", lookup, tls=True).step(data)
    assert type(out) is Failed


def test_exchange_cannot_continue_after_it_ended():
    s = SaslServer("PLAIN", lookup, tls=True)
    s.step(b"\0alice\0pw")
    assert type(s.step(b"\0alice\0pw")) is Failed


def test_binding_preference_and_end_point_hash():
    assert choose_binding({"tls-unique": b"u", "tls-server-end-point": b"e"}) == ("tls-server-end-point", b"e")
    assert choose_binding({}) is None
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "t")])
    now = datetime.datetime(2026, 1, 1)
    for algo, expect in ((hashes.SHA384(), "sha384"), (hashes.SHA256(), "sha256")):
        cert = x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()) \
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1)).sign(key, algo)
        der = cert.public_bytes(serialization.Encoding.DER)
        import hashlib
        assert server_end_point(der) == hashlib.new(expect, der).digest()
