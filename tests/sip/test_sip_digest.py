"""Digest authentication: the RFC vectors, nonces (expiry, stale, forgery), nonce-count replay with
bounded state, HA1 storage, and sipsak (a real client) registering against a tiny UDP responder."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from sipsupport import DigestResponder

from bridges.sip.digest import (
    Credentials, DigestVerifier, NonceCounts, authorization, challenge, compute_response, ha1, make_nonce,
    nonce_issued_at, parse_challenge, parse_credentials, registration_ha1s,
)
from bridges.sip.errors import SipParseError


def test_rfc2617_section_3_5_example():
    value = ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    assert compute_response("MD5", value, "dcd98b7102dd2f0e8b11d0f600bfb0c093", "GET", "/dir/index.html",
                            "auth", "00000001", "0a4f113b") == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize("algorithm, expected", [
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_rfc7616_section_3_9_1_example(algorithm, expected):
    value = ha1(algorithm, "Mufasa", "http-auth@example.org", "Circle of Life")
    assert compute_response(algorithm, value, "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", "GET",
                            "/dir/index.html", "auth", "00000001",
                            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ") == expected


def test_registration_stores_both_ha1s():
    stored = registration_ha1s("alice", "relaynet.test", "pw")
    assert stored == {"MD5": ha1("MD5", "alice", "relaynet.test", "pw"),
                      "SHA-256": ha1("SHA-256", "alice", "relaynet.test", "pw")}
    assert len(stored["MD5"]) == 32 and len(stored["SHA-256"]) == 64


def test_parse_credentials_and_challenge():
    creds = parse_credentials('Digest username="al\\"ice", realm="r", nonce="n", uri="sip:r", '
                              'response="abc", algorithm=SHA-256, qop=auth, nc=00000002, cnonce="c, x"')
    assert (creds.username, creds.algorithm, creds.qop, creds.nc, creds.cnonce) == \
        ('al"ice', "SHA-256", "auth", "00000002", "c, x")
    assert parse_credentials("NoOneKnowsThisScheme opaque-data=here") is None
    with pytest.raises(SipParseError):
        parse_credentials('Digest username="alice"')
    with pytest.raises(SipParseError):
        parse_credentials('Digest username="unterminated')
    p = parse_challenge(challenge("relaynet.test", "N1", "SHA-256", stale=True))
    assert p == {"realm": "relaynet.test", "nonce": "N1", "algorithm": "SHA-256", "qop": "auth", "stale": "true"}


SECRET = b"server secret"
STORE = registration_ha1s("alice", "relaynet.test", "pw")


def lookup(user, algorithm):
    return STORE[algorithm] if user == "alice" else None


def creds_for(nonce, algorithm="MD5", nc=1, password="pw", user="alice", method="REGISTER", cnonce="c1"):
    return parse_credentials(authorization(user, "relaynet.test", password, nonce, method, "sip:relaynet.test",
                                           algorithm, nc, cnonce))


@pytest.mark.parametrize("algorithm", ["MD5", "MD5-sess", "SHA-256", "SHA-256-sess"])
def test_verify_each_algorithm(algorithm):
    verifier = DigestVerifier(SECRET, "relaynet.test")
    nonce = make_nonce(SECRET, 1000.0)
    result = verifier.verify(creds_for(nonce, algorithm), "REGISTER", lookup, 1001.0, "sip:relaynet.test")
    assert result.ok and result.username == "alice"


def test_wrong_password_user_method_uri_realm_and_forged_nonce_are_refused():
    verifier = DigestVerifier(SECRET, "relaynet.test")
    nonce = make_nonce(SECRET, 1000.0)
    assert verifier.verify(creds_for(nonce, password="nope"), "REGISTER", lookup, 1001).reason == "wrong response"
    assert verifier.verify(creds_for(nonce, user="mallory"), "REGISTER", lookup, 1001).reason == "unknown user"
    assert verifier.verify(creds_for(nonce), "INVITE", lookup, 1001).reason == "wrong response"
    assert not verifier.verify(creds_for(nonce), "REGISTER", lookup, 1001, "sip:elsewhere").ok
    other_realm = DigestVerifier(SECRET, "elsewhere.test")
    assert other_realm.verify(creds_for(nonce), "REGISTER", lookup, 1001).reason == "wrong realm"
    forged = make_nonce(b"another secret", 1000.0)
    assert verifier.verify(creds_for(forged), "REGISTER", lookup, 1001).reason == "unknown nonce"
    assert nonce_issued_at(SECRET, nonce) == 1000 and nonce_issued_at(SECRET, "garbage!") is None
    tampered = nonce[:-2] + ("AA" if nonce[-2:] != "AA" else "BB")
    assert verifier.verify(creds_for(tampered), "REGISTER", lookup, 1001).reason == "unknown nonce"
    no_qop = creds_for(nonce)
    no_qop.qop = None
    assert not verifier.verify(no_qop, "REGISTER", lookup, 1001).ok
    assert not DigestVerifier(SECRET, "relaynet.test", algorithms=("SHA-256",)).verify(
        creds_for(nonce, "MD5"), "REGISTER", lookup, 1001).ok


def test_hostile_credentials_are_refused_not_raised():
    verifier = DigestVerifier(SECRET, "relaynet.test")
    nonce = make_nonce(SECRET, 1000.0)
    for response in ("ünïcödé", "\udcff" * 32, "", "0" * 10000):
        creds = creds_for(nonce)
        creds.response = response
        assert verifier.verify(creds, "REGISTER", lookup, 1001).reason == "wrong response"
    for nonce_text in ("ü", "", "=" * 50, "A" * 10000):
        assert verifier.verify(creds_for(nonce_text), "REGISTER", lookup, 1001).reason == "unknown nonce"
    bad_nc = creds_for(nonce)
    bad_nc.nc = "zzzzzzzz"
    assert not verifier.verify(bad_nc, "REGISTER", lookup, 1001).ok


def test_expired_nonce_is_stale_not_wrong():
    verifier = DigestVerifier(SECRET, "relaynet.test", nonce_lifetime=300)
    nonce = make_nonce(SECRET, 1000.0)
    assert verifier.verify(creds_for(nonce), "REGISTER", lookup, 1299.0).ok
    late = verifier.verify(creds_for(nonce, nc=2), "REGISTER", lookup, 1301.0)
    assert not late.ok and late.stale and late.username == "alice"
    bad_and_late = verifier.verify(creds_for(nonce, nc=3, password="x"), "REGISTER", lookup, 1301.0)
    assert not bad_and_late.stale  # stale only tells a client that knows the password
    assert all('stale=true' in c for c in verifier.challenges(1301.0, stale=True))


def test_nonce_count_replay_is_refused():
    verifier = DigestVerifier(SECRET, "relaynet.test")
    nonce = make_nonce(SECRET, 1000.0)
    first = creds_for(nonce, nc=1)
    assert verifier.verify(first, "REGISTER", lookup, 1001).ok
    replay = verifier.verify(first, "REGISTER", lookup, 1002)
    assert not replay.ok and not replay.stale and replay.reason == "nonce count replayed"
    assert verifier.verify(creds_for(nonce, nc=3), "REGISTER", lookup, 1003).ok  # nc may skip
    assert not verifier.verify(creds_for(nonce, nc=2), "REGISTER", lookup, 1004).ok  # but never go back


def test_nonce_state_is_bounded_and_forgotten_nonces_are_stale():
    counts = NonceCounts(max_nonces=3)
    for i in range(3):
        assert counts.accept(f"n{i}", 100 + i, 1) == "ok"
    assert counts.accept("n3", 200, 1) == "ok" and len(counts) == 3  # n0 (issued earliest) forgotten
    assert counts.floor == 100
    assert counts.accept("n0", 100, 2) == "forgotten"  # may have been used: never accepted again
    assert counts.accept("n1", 101, 1) == "replay" and counts.accept("n1", 101, 2) == "ok"
    counts.expire(older_than=150)
    assert len(counts) == 1

    verifier = DigestVerifier(SECRET, "relaynet.test", max_nonces=2)
    nonces = [make_nonce(SECRET, 1000.0 + i) for i in range(3)]
    for n in nonces:
        assert verifier.verify(creds_for(n), "REGISTER", lookup, 1010).ok
    forgotten = verifier.verify(creds_for(nonces[0], nc=2), "REGISTER", lookup, 1011)
    assert not forgotten.ok and forgotten.stale
    assert len(verifier.counts) <= 2


def test_many_clients_keep_state_bounded():
    verifier = DigestVerifier(SECRET, "relaynet.test", max_nonces=100)
    for i in range(1000):
        assert verifier.verify(creds_for(make_nonce(SECRET, 1000.0 + i / 10)), "REGISTER", lookup, 1100).ok
    assert len(verifier.counts) == 100


def test_credentials_is_a_plain_record():
    c = Credentials("u", "r", "n", "sip:r", "x")
    assert (c.algorithm, c.qop) == ("MD5", None)


# --- sipsak ------------------------------------------------------------------------------------------------

SIPSAK = shutil.which("sipsak")
needs_sipsak = pytest.mark.skipif(SIPSAK is None, reason="sipsak not installed (tools/dev installs it as root)")


def sipsak(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SIPSAK, "-i", "-vv", *args], capture_output=True, text=True, timeout=60)


@needs_sipsak
def test_sipsak_options_is_answered():
    with DigestResponder({"alice": "pw"}) as responder:
        r = sipsak("-s", f"sip:127.0.0.1:{responder.port}")
        assert r.returncode == 0, r.stdout + r.stderr
        assert [q.method for q in responder.requests] == ["OPTIONS"]


@needs_sipsak
@pytest.mark.parametrize("algorithms", [("MD5",), ("MD5", "SHA-256")])
def test_sipsak_registers_and_unregisters_with_digest(algorithms):
    # sipsak 0.9.8 knows MD5 only and answers the first challenge: MD5 must come first for it.
    with DigestResponder({"alice": "secret-pw"}, algorithms=algorithms) as responder:
        uri = f"sip:alice@127.0.0.1:{responder.port}"
        r = sipsak("-U", "-C", "sip:alice@127.0.0.1:5999", "-x", "600", "-a", "secret-pw", "-u", "alice", "-s", uri)
        assert r.returncode == 0, r.stdout + r.stderr
        r = sipsak("-U", "-C", "sip:alice@127.0.0.1:5999", "-x", "0", "-a", "secret-pw", "-u", "alice", "-s", uri)
        assert r.returncode == 0, r.stdout + r.stderr
        assert [x.ok for x in responder.results] == [True, True]
        registers = [q for q in responder.requests if q.method == "REGISTER"]
        assert [q.expires for q in registers] == [600, 600, 0, 0]
        assert all(str(q.contacts[0].uri) == "sip:alice@127.0.0.1:5999" for q in registers)


@needs_sipsak
def test_sipsak_with_a_wrong_password_is_refused():
    with DigestResponder({"alice": "secret-pw"}) as responder:
        r = sipsak("-U", "-C", "sip:alice@127.0.0.1:5999", "-x", "600", "-a", "wrong", "-u", "alice",
                   "-s", f"sip:alice@127.0.0.1:{responder.port}")
        assert r.returncode != 0
        assert [x.reason for x in responder.results] == ["wrong response"]


def _rfc2069(nonce, uri="sip:relaynet.test;transport=UDP", password="pw", method="REGISTER"):
    """What pyVoIP sends: no qop, no nc, no cnonce, and a digest uri with a transport parameter."""
    response = compute_response("MD5", ha1("MD5", "alice", "relaynet.test", password), nonce, method, uri, None)
    return parse_credentials(f'Digest username="alice",realm="relaynet.test",nonce="{nonce}",uri="{uri}",'
                             f'response="{response}",algorithm=MD5')


def test_digest_without_qop_only_when_allowed():
    nonce = make_nonce(SECRET, 1000.0)
    strict = DigestVerifier(SECRET, "relaynet.test")
    assert not strict.verify(_rfc2069(nonce, "sip:relaynet.test"), "REGISTER", lookup, 1001, "sip:relaynet.test").ok
    lax = DigestVerifier(SECRET, "relaynet.test", allow_without_qop=True)
    assert lax.verify(_rfc2069(nonce), "REGISTER", lookup, 1001, "sip:relaynet.test").ok
    assert lax.verify(_rfc2069(nonce, password="nope"), "REGISTER", lookup, 1001, "sip:relaynet.test").reason \
        == "wrong response"
    assert not lax.verify(_rfc2069(nonce, "sip:elsewhere.test"), "REGISTER", lookup, 1001, "sip:relaynet.test").ok
    assert lax.verify(_rfc2069(nonce), "REGISTER", lookup, 2000, "sip:relaynet.test").stale   # nonces still expire
    assert lax.verify(creds_for(nonce), "REGISTER", lookup, 1001, "sip:relaynet.test").ok   # qop=auth as before
