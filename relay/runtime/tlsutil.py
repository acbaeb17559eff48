"""TLS for listeners and links: cooperative contexts, a bounded handshake, and a
self-signed certificate for TLS listeners when none is configured."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
from pathlib import Path

import gevent
import gevent.ssl

log = logging.getLogger("relay.runtime")


# gevent's SSLContext makes gevent SSLSockets, which wait on the loop; the stdlib's
# (ssl.create_default_context) would block the whole process in the handshake and every read.
def server_context(cert: Path, key: Path) -> gevent.ssl.SSLContext:
    ctx = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def link_client_context() -> gevent.ssl.SSLContext:
    """For dialling links: the peer is authenticated by its pinned fingerprint, not by a CA."""
    ctx = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_context() -> gevent.ssl.SSLContext:
    """For modules' dials: the system's CAs, and the host name checked."""
    return gevent.ssl.create_default_context()


def tls_handshake(sock, timeout: float) -> str | None:
    """Do the handshake of a gevent SSLSocket within `timeout` seconds in all (a socket timeout
    would restart at every byte a slow peer sends); None when done, else why it failed."""
    deadline = gevent.Timeout(timeout)
    deadline.start()
    try:
        sock.do_handshake()
        return None
    except gevent.Timeout as e:
        if e is not deadline:
            raise
        return f"no handshake within {timeout:g} s"
    except ssl.SSLEOFError:
        return "closed by the peer during the handshake"
    except ssl.SSLError as e:
        return e.reason or e.strerror or str(e)
    except OSError as e:
        return e.strerror or str(e) or type(e).__name__
    finally:
        deadline.close()


MARKER = "generated-by-relaynet"  # next to a certificate we made: its fingerprint (an operator's is never touched)


def certificate_names(server_name: str, listen_hosts) -> tuple[list[str], list[str]]:
    """What our self-signed certificate covers: DNS names, and the IP addresses it listens on
    (loopback always; a wildcard address is no name a client dials)."""
    dns, ips = [server_name, "localhost"], ["127.0.0.1", "::1"]
    for h in listen_hosts:
        try:
            ip = ipaddress.ip_address(h)
        except ValueError:
            if h not in dns:
                dns.append(h)
            continue
        if not ip.is_unspecified and str(ip) not in ips:
            ips.append(str(ip))
    return dns, ips


def ensure_certificate(directory: Path, hostname: str, listen_hosts=()) -> tuple[Path, Path]:
    """The self-signed certificate in `directory`, made on first use. One we made earlier that
    does not cover today's names and addresses is made again (the log says its new fingerprint,
    which peers that pin it must learn)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    dns, ips = certificate_names(hostname, listen_hosts)
    if cert.exists() and key.exists():
        if not _ours(directory, cert) or _covers(cert, dns, ips):
            return cert, key
        _make(directory, cert, key, hostname, dns, ips)
        log.warning("TLS certificate %s was made again to cover %s; its SHA-256 fingerprint is now %s "
                    "(update peers that pin it)", cert, ", ".join(dns + ips), fingerprint(cert))
        return cert, key
    _make(directory, cert, key, hostname, dns, ips)
    return cert, key


def _make(directory: Path, cert: Path, key: Path, hostname: str, dns: list[str], ips: list[str]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    pk = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    c = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(pk.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
         .not_valid_after(now + datetime.timedelta(days=825))
         .add_extension(x509.SubjectAlternativeName(sans), False)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
         .add_extension(x509.KeyUsage(True, False, False, False, True, False, False, False, False), True)
         .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), False)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(pk.public_key()), False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(pk.public_key()), False)
         .sign(pk, hashes.SHA256()))
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pk.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()))
    cert.write_bytes(c.public_bytes(serialization.Encoding.PEM))
    (directory / MARKER).write_text(fingerprint(cert) + "\n")


def _sans(cert: Path):
    from cryptography import x509
    c = x509.load_pem_x509_certificate(cert.read_bytes())
    try:
        ext = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return c, [], []
    return c, ext.get_values_for_type(x509.DNSName), [str(i) for i in ext.get_values_for_type(x509.IPAddress)]


def _covers(cert: Path, dns: list[str], ips: list[str]) -> bool:
    _c, have_dns, have_ips = _sans(cert)
    return set(dns) <= set(have_dns) and set(ips) <= set(have_ips)


def _ours(directory: Path, cert: Path) -> bool:
    """Made by relaynet: the marker holds this certificate's fingerprint. One made before the
    marker existed is recognised by its exact shape: self-signed, CN and DNS names only."""
    try:
        marked = (directory / MARKER).read_text().strip()
    except FileNotFoundError:
        marked = None
    try:
        if marked is not None:
            return marked == fingerprint(cert)
        from cryptography.x509.oid import NameOID
        c, dns, ips = _sans(cert)
        cn = [a.value for a in c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        return (c.issuer == c.subject and len(cn) == 1 and not ips and dns == [cn[0], "localhost"]
                and len(c.subject) == 1)
    except ValueError:  # not a PEM certificate we can read: not ours to replace
        return False


def fingerprint(cert_path: Path) -> str:
    """SHA-256 fingerprint of a PEM certificate, as pinned in links: entries."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    c = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return c.fingerprint(hashes.SHA256()).hex()
