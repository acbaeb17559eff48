"""IRC over TLS: a self-signed certificate is made on first start when none is configured."""

import socket
import ssl

from support import free_port


def test_tls_listener_with_generated_certificate(make_server):
    tls_port = free_port()
    srv = make_server(listen=[{"proto": "irc", "host": "127.0.0.1", "port": free_port()},
                              {"proto": "irc", "host": "127.0.0.1", "port": tls_port, "tls": True}])
    cert = srv.data_dir / "tls" / "cert.pem"
    key = srv.data_dir / "tls" / "key.pem"
    assert cert.exists() and (key.stat().st_mode & 0o777) == 0o600
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False   # the certificate names server.name, we dial 127.0.0.1
    with socket.create_connection(("127.0.0.1", tls_port), timeout=10) as raw:
        with ctx.wrap_socket(raw) as s:
            s.sendall(b"NICK secure\r\nUSER s 0 * :S\r\nWHOIS secure\r\n")
            buf = b""
            while b" 318 " not in buf:
                chunk = s.recv(65536)
                assert chunk, buf
                buf += chunk
    assert b" 001 secure " in buf
    assert b" 671 secure secure :is using a secure connection" in buf
    # The same certificate is kept across restarts.
    before = cert.read_bytes()
    srv.stop()
    srv.start()
    assert cert.read_bytes() == before


# ------------------------------------------------------------------ the certificate's names


def _sans(cert_path):
    from cryptography import x509
    c = x509.load_pem_x509_certificate(cert_path.read_bytes())
    ext = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName)), {str(i) for i in ext.get_values_for_type(x509.IPAddress)}


def test_generated_certificate_covers_the_addresses_it_listens_on(make_server):
    tls_port = free_port()
    srv = make_server(listen=[{"proto": "irc", "host": "127.0.0.1", "port": free_port()},
                              {"proto": "irc", "host": "127.0.0.2", "port": free_port()},
                              {"proto": "irc", "host": "0.0.0.0", "port": free_port()},
                              {"proto": "irc", "host": "127.0.0.1", "port": tls_port, "tls": True}])
    cert = srv.data_dir / "tls" / "cert.pem"
    dns, ips = _sans(cert)
    assert {"test.relay.local", "localhost"} <= dns
    assert {"127.0.0.1", "::1", "127.0.0.2"} <= ips and "0.0.0.0" not in ips
    # A verifying client that dials the address checks it against the IP SANs.
    ctx = ssl.create_default_context(cafile=str(cert))
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    with socket.create_connection(("127.0.0.1", tls_port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(b"NICK verified\r\nUSER v 0 * :V\r\n")
            buf = b""
            while b" 001 " not in buf:
                chunk = s.recv(65536)
                assert chunk, buf
                buf += chunk


def _legacy_certificate(directory, cn: str, dns: list[str]) -> None:
    """A certificate as relaynet made them before it covered IP addresses (or an operator's one)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    directory.mkdir(parents=True, exist_ok=True)
    pk = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    c = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(pk.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
         .not_valid_after(now + datetime.timedelta(days=30))
         .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]), False)
         .sign(pk, hashes.SHA256()))
    (directory / "key.pem").write_bytes(pk.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    (directory / "cert.pem").write_bytes(c.public_bytes(serialization.Encoding.PEM))


def test_a_certificate_we_made_is_remade_when_it_lacks_the_addresses(tmp_path):
    from relay.runtime.tlsutil import MARKER, ensure_certificate
    # Made by an older relaynet (no marker, its exact shape): remade, with the IP addresses.
    old = tmp_path / "old"
    _legacy_certificate(old, "relay.example", ["relay.example", "localhost"])
    before = (old / "cert.pem").read_bytes()
    ensure_certificate(old, "relay.example", ["127.0.0.1"])
    assert (old / "cert.pem").read_bytes() != before and (old / MARKER).exists()
    assert {"127.0.0.1", "::1"} <= _sans(old / "cert.pem")[1]
    # Made by us with a marker: kept while it covers the addresses, remade for a new one.
    kept = (old / "cert.pem").read_bytes()
    ensure_certificate(old, "relay.example", ["127.0.0.1", "localhost"])
    assert (old / "cert.pem").read_bytes() == kept
    ensure_certificate(old, "relay.example", ["127.0.0.1", "10.1.2.3"])
    assert "10.1.2.3" in _sans(old / "cert.pem")[1]


def test_an_operators_certificate_is_never_replaced(tmp_path):
    from relay.runtime.tlsutil import MARKER, ensure_certificate
    # Not our shape: another name in the SANs.
    op = tmp_path / "op"
    _legacy_certificate(op, "relay.example", ["relay.example", "irc.example.org"])
    before = (op / "cert.pem").read_bytes()
    ensure_certificate(op, "relay.example", ["127.0.0.1"])
    assert (op / "cert.pem").read_bytes() == before and not (op / MARKER).exists()
    # Our shape, but the marker names another certificate: the operator replaced ours.
    swapped = tmp_path / "swapped"
    ensure_certificate(swapped, "relay.example", ["127.0.0.1"])
    _legacy_certificate(swapped, "relay.example", ["relay.example", "localhost"])
    before = (swapped / "cert.pem").read_bytes()
    ensure_certificate(swapped, "relay.example", ["127.0.0.1"])
    assert (swapped / "cert.pem").read_bytes() == before
