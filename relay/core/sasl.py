"""SASL for every protocol, sans-IO: PLAIN, SCRAM-SHA-1, SCRAM-SHA-256 and their -PLUS variants.

A protocol frames the exchange (IRC AUTHENTICATE lines, XMPP <auth/> and
<response/>) and feeds the decoded bytes here:

    server = SaslServer("SCRAM-SHA-256", lookup, tls=True, channel_binding=cb)
    outcome = server.step(initial_response)   # Challenge | Succeeded | Failed
    while type(outcome) is Challenge:
        outcome = server.step(next_response)

SCRAM is scramp's; accounts keep only the SCRAM secrets (never a password), so
PLAIN is checked against the SCRAM-SHA-256 secret. Channel binding for -PLUS
is what the transport can give: `tls-server-end-point` (RFC 5929, the hash of
our certificate, which works over TLS 1.3) always, `tls-exporter` (RFC 9266)
only where the TLS library exports keying material (Python's ssl module does
not), and `tls-unique` for TLS 1.2. No clock and no I/O here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from scramp import ScramException, ScramMechanism

from relay.core.accounts import Account, check_password

SCRAM = ("SCRAM-SHA-1", "SCRAM-SHA-256")
# Strongest first: the order clients are offered them in.
ALL_MECHANISMS = ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")
BINDING_PREFERENCE = ("tls-exporter", "tls-server-end-point", "tls-unique")


class AccountLookup(Protocol):
    def __call__(self, name: str) -> Account | None: ...


@dataclass(slots=True, frozen=True)
class Challenge:
    """Send `data` to the client and feed its response to `step`."""
    data: bytes


@dataclass(slots=True, frozen=True)
class Succeeded:
    """Authenticated as `account`; `data` is the mechanism's final message (SCRAM server-final) or None."""
    account: str
    data: bytes | None = None


@dataclass(slots=True, frozen=True)
class Failed:
    """`condition` is the RFC 6120 §6.5 name; each protocol maps it onto its own reply."""
    condition: str   # not-authorized, malformed-request, invalid-mechanism, encryption-required, invalid-authzid
    text: str = ""


Outcome = Challenge | Succeeded | Failed


def offered_mechanisms(tls: bool, bindings: dict[str, bytes] | None = None, plain_needs_tls: bool = True,
                       allowed: tuple[str, ...] = ALL_MECHANISMS) -> list[str]:
    """The mechanisms to advertise on a connection: -PLUS only with channel binding, PLAIN per policy."""
    out = []
    for m in ALL_MECHANISMS:
        if m not in allowed:
            continue
        if m.endswith("-PLUS") and not bindings:
            continue
        if m == "PLAIN" and plain_needs_tls and not tls:
            continue
        out.append(m)
    return out


def choose_binding(bindings: dict[str, bytes] | None) -> tuple[str, bytes] | None:
    """The channel binding type the server prefers among those the transport offers."""
    if not bindings:
        return None
    for name in BINDING_PREFERENCE:
        if name in bindings:
            return name, bindings[name]
    return None


def server_end_point(cert_der: bytes) -> bytes:
    """RFC 5929 §4.1: the certificate's hash, SHA-256 for MD5/SHA-1 signatures, else the signature's hash."""
    try:
        from cryptography import x509
        algo = x509.load_der_x509_certificate(cert_der).signature_hash_algorithm
        name = (algo.name if algo is not None else "sha256").lower()
    except Exception:
        name = "sha256"
    if name in ("md5", "sha1"):
        name = "sha256"
    return hashlib.new(name, cert_der).digest()


class SaslServer:
    """One authentication exchange of one mechanism."""

    def __init__(self, mechanism: str, lookup: AccountLookup, *, tls: bool,
                 bindings: dict[str, bytes] | None = None, plain_needs_tls: bool = True,
                 allowed: tuple[str, ...] = ALL_MECHANISMS):
        self.mechanism = mechanism.upper()
        self.lookup = lookup
        self.tls = tls
        self.bindings = bindings or {}
        self.plain_needs_tls = plain_needs_tls
        self.allowed = allowed
        self.account: str | None = None
        self.done = False
        self._scram = None
        self._final_sent = False

    def step(self, data: bytes | None) -> Outcome:
        """Feed the client's next message (None or b"" for an empty initial response)."""
        if self.done:
            return self._fail("malformed-request", "the exchange has ended")
        mech = self.mechanism
        if mech not in offered_mechanisms(self.tls, self.bindings, self.plain_needs_tls, self.allowed):
            if mech == "PLAIN" and "PLAIN" in self.allowed and self.plain_needs_tls and not self.tls:
                return self._fail("encryption-required", "PLAIN needs TLS")
            return self._fail("invalid-mechanism", f"{mech} is not offered")
        if mech == "PLAIN":
            return self._plain(data or b"")
        return self._scram_step(data or b"")

    # ------------------------------------------------------------------ PLAIN (RFC 4616)
    def _plain(self, data: bytes) -> Outcome:
        if not data:
            return Challenge(b"")  # no initial response: ask for it
        try:
            authzid, authcid, password = data.decode("utf-8").split("\0")
        except (UnicodeDecodeError, ValueError):
            return self._fail("malformed-request", "PLAIN wants authzid NUL authcid NUL password")
        if authzid and authzid != authcid:
            return self._fail("invalid-authzid", "authorization identity differs from the authenticated one")
        acct = self.lookup(authcid)
        if acct is None or not check_password(acct, password):
            return self._fail("not-authorized")
        return self._ok(acct.name)

    # ------------------------------------------------------------------ SCRAM (RFC 5802, 7677)
    def _scram_step(self, data: bytes) -> Outcome:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return self._fail("malformed-request", "not UTF-8")
        try:
            if self._scram is None:
                if not text:
                    return Challenge(b"")
                self._scram = self._make_scram()
                self._scram.set_client_first(text)
                return Challenge(self._scram.get_server_first().encode())
            if not self._final_sent:
                self._scram.set_client_final(text)
                self._final_sent = True
                return self._ok(self.account, self._scram.get_server_final().encode())
        except ScramException as e:
            return self._fail("not-authorized", str(e))
        return self._fail("malformed-request", "the exchange has ended")

    def _make_scram(self):
        plus = self.mechanism.endswith("-PLUS")
        base = self.mechanism[:-5] if plus else self.mechanism
        lookup = self.lookup

        def auth_fn(username: str):
            acct = lookup(username)
            if acct is None or base not in acct.scram:
                raise ScramException("unknown user")
            self.account = acct.name
            s = acct.scram[base]
            return s.salt, s.stored_key, s.server_key, s.iterations

        # A server that can bind passes the binding to the plain mechanism too, so a client that
        # says "y" (it could bind but thinks we cannot) is caught as a downgrade (RFC 5802 §6).
        binding = choose_binding(self.bindings)
        return ScramMechanism(self.mechanism).make_server(auth_fn, channel_binding=binding)

    # ------------------------------------------------------------------
    def _ok(self, account: str, data: bytes | None = None) -> Succeeded:
        self.done = True
        self.account = account
        return Succeeded(account, data)

    def _fail(self, condition: str, text: str = "") -> Failed:
        self.done = True
        return Failed(condition, text)

