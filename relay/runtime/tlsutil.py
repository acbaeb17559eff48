"""TLS for listeners and links: cooperative contexts, a bounded handshake, and a
self-signed certificate for TLS listeners when none is configured."""

from __future__ import annotations

import datetime
import os
import ssl
from pathlib import Path

import gevent
import gevent.ssl


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


def ensure_certificate(directory: Path, hostname: str) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    if cert.exists() and key.exists():
        return cert, key
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    pk = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    c = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(pk.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
         .not_valid_after(now + datetime.timedelta(days=825))
         .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname), x509.DNSName("localhost")]), False)
         .sign(pk, hashes.SHA256()))
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pk.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()))
    cert.write_bytes(c.public_bytes(serialization.Encoding.PEM))
    return cert, key


def fingerprint(cert_path: Path) -> str:
    """SHA-256 fingerprint of a PEM certificate, as pinned in links: entries."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    c = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return c.fingerprint(hashes.SHA256()).hex()
