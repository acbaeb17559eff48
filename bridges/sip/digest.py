"""HTTP digest authentication for SIP (RFC 2617, RFC 7616, RFC 8760): MD5, MD5-sess, SHA-256 and
SHA-256-sess with qop=auth, verified against a stored HA1 (never the password).

Nonces carry their own issue time and an HMAC with a server secret, so checking one (genuine? expired,
hence `stale=true`?) needs no state; only nonce-count replay needs memory, bounded by `max_nonces`
(see NonceCounts). Time is passed in; nothing here does I/O.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import os
import re
import struct
from dataclasses import dataclass

from bridges.sip.errors import SipParseError
from bridges.sip.headers import quote, unquote

ALGORITHMS = {"MD5": hashlib.md5, "MD5-SESS": hashlib.md5, "SHA-256": hashlib.sha256,
              "SHA-256-SESS": hashlib.sha256}
_AUTH_PARAM = re.compile(r'[ \t]*([A-Za-z0-9\-_.]+)[ \t]*=[ \t]*("(?:[^"\\]|\\.)*"|[^, \t]*)[ \t]*(,|\Z)', re.S)
_NONCE_MAC = 16
_NC = re.compile(r"[0-9a-fA-F]{8}\Z")


def _h(algorithm: str, text: str) -> str:
    return ALGORITHMS[algorithm.upper()](text.encode("utf-8")).hexdigest()


def ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """H(username:realm:password), the value a registrar stores (the -sess variants use the same)."""
    return _h(algorithm, f"{username}:{realm}:{password}")


def registration_ha1s(username: str, realm: str, password: str) -> dict[str, str]:
    """Both HA1s to store when an account's password is set: MD5 for RFC 2617 clients, SHA-256 for
    RFC 8760 ones."""
    return {"MD5": ha1("MD5", username, realm, password), "SHA-256": ha1("SHA-256", username, realm, password)}


def compute_response(algorithm: str, ha1_value: str, nonce: str, method: str, uri: str,
                     qop: str | None = "auth", nc: str = "00000001", cnonce: str = "") -> str:
    """The request-digest of RFC 7616 §3.4.1 (and RFC 2069's form when qop is None)."""
    algorithm = algorithm.upper()
    if algorithm.endswith("-SESS"):
        ha1_value = _h(algorithm, f"{ha1_value}:{nonce}:{cnonce}")
    ha2 = _h(algorithm, f"{method}:{uri}")
    if qop is None:
        return _h(algorithm, f"{ha1_value}:{nonce}:{ha2}")
    return _h(algorithm, f"{ha1_value}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# --- header values --------------------------------------------------------------------------------------

def parse_auth_params(text: str) -> dict[str, str]:
    """`name=value, name="quoted"` as a dict with lowercased names and unquoted values."""
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        m = _AUTH_PARAM.match(text, i)
        if not m:
            raise SipParseError("malformed authentication parameters")
        params[m.group(1).lower()] = unquote(m.group(2))
        i = m.end()
    return params


@dataclass(slots=True)
class Credentials:
    """An Authorization or Proxy-Authorization value of the Digest scheme."""
    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None


def parse_credentials(value: str) -> Credentials | None:
    """Digest credentials, or None for another scheme (RFC 4475 §3.3.7: an unknown scheme is not an
    error, the request is simply unauthenticated). Raises SipParseError for a malformed Digest value."""
    scheme, _, rest = value.strip(" \t").partition(" ")
    if scheme.lower() != "digest":
        return None
    p = parse_auth_params(rest.strip(" \t"))
    try:
        creds = Credentials(p["username"], p["realm"], p["nonce"], p["uri"], p["response"],
                            p.get("algorithm", "MD5"), p.get("qop"), p.get("nc"), p.get("cnonce"),
                            p.get("opaque"))
    except KeyError as e:
        raise SipParseError(f"Digest credentials without {e.args[0]}") from None
    return creds


def challenge(realm: str, nonce: str, algorithm: str = "MD5", stale: bool = False,
              opaque: str | None = None) -> str:
    """A WWW-Authenticate / Proxy-Authenticate value offering qop=auth."""
    parts = [f"realm={quote(realm)}", f"nonce={quote(nonce)}"]
    if opaque is not None:
        parts.append(f"opaque={quote(opaque)}")
    parts.append(f"algorithm={algorithm}")
    parts.append('qop="auth"')
    if stale:
        parts.append("stale=true")
    return "Digest " + ", ".join(parts)


def parse_challenge(value: str) -> dict[str, str] | None:
    scheme, _, rest = value.strip(" \t").partition(" ")
    return parse_auth_params(rest.strip(" \t")) if scheme.lower() == "digest" else None


def authorization(username: str, realm: str, password: str, nonce: str, method: str, uri: str,
                  algorithm: str = "MD5", nc: int = 1, cnonce: str = "0a4f113b", opaque: str | None = None) -> str:
    """A client's Authorization value for a challenge (for tests and tools; relaynet is the server)."""
    nc_text = f"{nc:08x}"
    response = compute_response(algorithm, ha1(algorithm.upper().removesuffix("-SESS"), username, realm, password),
                                nonce, method, uri, "auth", nc_text, cnonce)
    parts = [f"username={quote(username)}", f"realm={quote(realm)}", f"nonce={quote(nonce)}",
             f"uri={quote(uri)}", f"response={quote(response)}", f"algorithm={algorithm}",
             f"cnonce={quote(cnonce)}", "qop=auth", f"nc={nc_text}"]
    if opaque is not None:
        parts.append(f"opaque={quote(opaque)}")
    return "Digest " + ", ".join(parts)


# --- nonces -----------------------------------------------------------------------------------------------

def make_nonce(secret: bytes, now: float, salt: bytes | None = None) -> str:
    """A nonce: issue time, 8 random bytes, and an HMAC of both under the server secret."""
    body = struct.pack(">Q", int(now)) + (salt if salt is not None else os.urandom(8))
    mac = hmac.new(secret, body, hashlib.sha256).digest()[:_NONCE_MAC]
    return base64.urlsafe_b64encode(body + mac).decode("ascii").rstrip("=")


def nonce_issued_at(secret: bytes, nonce: str) -> int | None:
    """The issue time of a nonce this secret made, or None for anything else."""
    try:
        raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
    except (ValueError, TypeError):
        return None
    if len(raw) != 16 + _NONCE_MAC:
        return None
    body, mac = raw[:16], raw[16:]
    if not hmac.compare_digest(mac, hmac.new(secret, body, hashlib.sha256).digest()[:_NONCE_MAC]):
        return None
    return struct.unpack(">Q", body[:8])[0]


class NonceCounts:
    """The highest nonce-count seen per nonce, for at most `max_nonces` nonces. When full, the nonce
    issued earliest is forgotten and `floor` rises to its issue time: a nonce issued at or before the
    floor that is not remembered may have been used already, so it is answered stale (a fresh nonce
    costs the client one round trip; a replay would cost the account)."""

    def __init__(self, max_nonces: int = 10000):
        self.max_nonces = max_nonces
        self._highest: dict[str, int] = {}
        self._by_issue: list[tuple[int, str]] = []
        self.floor = -1

    def __len__(self) -> int:
        return len(self._highest)

    def expire(self, older_than: int) -> None:
        """Forget nonces issued before `older_than` (they are expired anyway, and refused as stale)."""
        while self._by_issue and self._by_issue[0][0] < older_than:
            _, nonce = heapq.heappop(self._by_issue)
            self._highest.pop(nonce, None)

    def accept(self, nonce: str, issued: int, nc: int) -> str:
        """Record a use: "ok", "replay" (nc not above the highest seen) or "forgotten"."""
        seen = self._highest.get(nonce)
        if seen is None:
            if issued <= self.floor:
                return "forgotten"
            while len(self._highest) >= self.max_nonces:
                old_issue, old = heapq.heappop(self._by_issue)
                self._highest.pop(old, None)
                self.floor = max(self.floor, old_issue)
                if issued <= self.floor:
                    return "forgotten"
            heapq.heappush(self._by_issue, (issued, nonce))
        elif nc <= seen:
            return "replay"
        self._highest[nonce] = nc
        return "ok"


@dataclass(slots=True)
class DigestResult:
    """ok: authenticated as `username`. stale: right password but the nonce is too old (or no longer
    tracked), so challenge again with stale=true. Otherwise refused with `reason` (a replayed
    nonce-count is refused, not stale: it counts as a failed authentication)."""
    ok: bool
    username: str | None = None
    stale: bool = False
    reason: str = ""


class DigestVerifier:
    """Server side: issues challenges and verifies credentials against stored HA1s.

    `lookup(username, algorithm) -> HA1 or None` reads the account store ("MD5" or "SHA-256"); the
    -sess variants use the plain HA1."""

    def __init__(self, secret: bytes, realm: str, nonce_lifetime: float = 300.0, max_nonces: int = 10000,
                 algorithms: tuple[str, ...] = ("SHA-256", "MD5"), allow_without_qop: bool = False):
        self.secret = secret
        # RFC 2069 responses (no qop, so no nonce-count: a response can be replayed while its nonce
        # lives), with a digest uri that may differ from the Request-URI in its parameters: what pyVoIP
        # sends. Off unless the operator turns it on.
        self.allow_without_qop = allow_without_qop
        self.realm = realm
        self.nonce_lifetime = nonce_lifetime
        self.algorithms = algorithms
        self.counts = NonceCounts(max_nonces)

    def challenges(self, now: float, stale: bool = False) -> list[str]:
        """One challenge per algorithm, strongest first (RFC 8760 §2.4: a header field each)."""
        return [challenge(self.realm, make_nonce(self.secret, now), a, stale) for a in self.algorithms]

    def verify(self, creds: Credentials, method: str, lookup, now: float,
               request_uri: str | None = None) -> DigestResult:
        """Check credentials for a request of `method` (and, if given, its Request-URI)."""
        algorithm = creds.algorithm.upper()
        legacy = self.allow_without_qop and creds.qop is None
        if request_uri is not None and creds.uri != request_uri and \
                not (legacy and creds.uri.split(";", 1)[0] == request_uri.split(";", 1)[0]):
            return DigestResult(False, reason="digest uri does not match the Request-URI")
        if algorithm not in ALGORITHMS or algorithm.removesuffix("-SESS") not in {a.upper() for a in self.algorithms}:
            return DigestResult(False, reason="unsupported algorithm")
        if creds.realm != self.realm:
            return DigestResult(False, reason="wrong realm")
        issued = nonce_issued_at(self.secret, creds.nonce)
        if issued is None:
            return DigestResult(False, reason="unknown nonce")
        if not legacy and (creds.qop != "auth" or creds.nc is None or creds.cnonce is None or
                           not _NC.match(creds.nc)):
            return DigestResult(False, reason="qop=auth with nc and cnonce required")
        if legacy and algorithm.endswith("-SESS"):
            return DigestResult(False, reason="-sess needs qop")
        stored = lookup(creds.username, "SHA-256" if algorithm.startswith("SHA-256") else "MD5")
        if stored is None:
            return DigestResult(False, reason="unknown user")
        if legacy:
            expected = compute_response(algorithm, stored, creds.nonce, method, creds.uri, None)
        else:
            expected = compute_response(algorithm, stored, creds.nonce, method, creds.uri, "auth", creds.nc,
                                        creds.cnonce)
        given = creds.response.lower().encode("utf-8", "surrogateescape")  # bytes: any octets compare
        if not hmac.compare_digest(expected.encode("ascii"), given):
            return DigestResult(False, reason="wrong response")
        self.counts.expire(int(now - self.nonce_lifetime))
        if now - issued > self.nonce_lifetime:
            return DigestResult(False, creds.username, stale=True, reason="nonce expired")
        if legacy:
            return DigestResult(True, creds.username)
        use = self.counts.accept(creds.nonce, issued, int(creds.nc, 16))
        if use == "replay":
            return DigestResult(False, creds.username, reason="nonce count replayed")
        if use == "forgotten":
            return DigestResult(False, creds.username, stale=True, reason="nonce no longer tracked")
        return DigestResult(True, creds.username)
