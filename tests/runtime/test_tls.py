"""IRC over TLS: a self-signed certificate is made on first start when none is configured."""

import re
import signal
import socket
import ssl
import subprocess
import time

from support import RELAYCTL, Server, free_port, server_config, wait_for


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


# ------------------------------------------------------------------ failed handshakes


def _served_within_a_second(port: int, nick: str) -> None:
    """A plain IRC client gets its 001 within a second (a liveness probe's deadline)."""
    deadline = time.monotonic() + 1.0
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
        s.sendall(f"NICK {nick}\r\nUSER {nick} 0 * :p\r\n".encode())
        buf = b""
        while f" 001 {nick} ".encode() not in buf:
            s.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = s.recv(65536)  # socket.timeout past the deadline fails the test
            assert chunk, buf
            buf += chunk


def test_failed_tls_handshakes_are_one_info_line_each_and_nothing_on_the_console(tmp_path):
    tls_port, irc_port = free_port(), free_port()
    srv = Server(tmp_path / "s", server_config(
        listen=[{"proto": "irc", "host": "127.0.0.1", "port": irc_port},
                {"proto": "irc", "host": "127.0.0.1", "port": tls_port, "tls": True}],
        limits={"handshake_timeout": 1}))
    proc = subprocess.Popen([RELAYCTL, "start", "-c", str(srv.path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: " started: " in srv.log(), what="the server to start")
        ports = []
        closed = socket.create_connection(("127.0.0.1", tls_port))  # closes before the handshake
        ports.append(closed.getsockname()[1])
        closed.close()
        http = socket.create_connection(("127.0.0.1", tls_port))    # speaks something else
        ports.append(http.getsockname()[1])
        http.sendall(b"GET / HTTP/1.0\r\n\r\n")
        idle = socket.create_connection(("127.0.0.1", tls_port))    # says nothing
        ports.append(idle.getsockname()[1])
        _served_within_a_second(irc_port, "probe1")
        wait_for(lambda: srv.log().count("TLS handshake failed") >= 3, what="three handshake failures logged")
        assert idle.recv(100) == b""  # closed by the server
        http.close()
        idle.close()
        _served_within_a_second(irc_port, "probe2")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    lines = [l for l in srv.log().splitlines() if "TLS handshake failed" in l]
    assert len(lines) == 3, lines
    for port, line, reason in zip(ports, lines, ("closed by the peer", "HTTP_REQUEST", "no handshake within 1 s")):
        assert re.search(rf" INFO +relay\.conn: irc 127\.0\.0\.1:{port} on 127\.0\.0\.1:{tls_port} \(tls\): "
                         rf"TLS handshake failed: {reason}", line), line
    assert "Traceback" not in srv.log()
    assert "Traceback" not in err and "Greenlet failed" not in err and "SSLEOFError" not in err, err


# ------------------------------------------------------------------ links over TLS


def _link_pair(tmp_path, b_link_port: int, **a_link):
    """a dials b over TLS (b's link listener is TLS); `a_link` overrides a's link block."""
    secret = "tls-link-secret-123"
    b = Server(tmp_path / "b", server_config(
        server={"id": "002", "name": "b.relay.test"},
        listen=[{"proto": "irc", "host": "127.0.0.1", "port": free_port()},
                {"proto": "link", "host": "127.0.0.1", "port": b_link_port, "tls": True}],
        links=[{"name": "a.relay.test", "id": "001", "port": free_port(), "secret": secret}]))
    a = Server(tmp_path / "a", server_config(
        server={"id": "001", "name": "a.relay.test"},
        irc={"registration_timeout": 5}, limits={"handshake_timeout": 1},
        links=[{"name": "b.relay.test", "id": "002", "port": b_link_port, "secret": secret, "autoconnect": True,
                "tls": True, **a_link}]))
    return a, b


def test_link_over_tls_with_a_pinned_fingerprint(tmp_path):
    from relay.runtime.tlsutil import ensure_certificate, fingerprint
    a, b = _link_pair(tmp_path, free_port())
    # b's certificate is made before b starts, so a can pin it.
    cert, _key = ensure_certificate(b.data_dir / "tls", "b.relay.test", ["127.0.0.1"])
    a.config["links"][0]["fingerprint"] = fingerprint(cert)
    a.path.write_text(__import__("yaml").safe_dump(a.config))
    try:
        b.start()
        a.start()
        wait_for(lambda: len(a.call("dump-state")["servers"]) == 2, timeout=30, interval=0.1, what="a linked to b")
        assert len(b.call("dump-state")["servers"]) == 2
    finally:
        a.stop()
        b.stop()


def test_a_link_dial_to_a_peer_that_never_handshakes_does_not_freeze_the_server(tmp_path):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts (in the kernel) and never answers the ClientHello
    silent.settimeout(30)
    a, _b = _link_pair(tmp_path, silent.getsockname()[1])
    try:
        a.start()
        wait_for(lambda: silent.accept(), what="a to dial")
        _served_within_a_second(a.irc_port, "probe1")
        wait_for(lambda: "TLS handshake failed: no handshake within 1 s" in a.log(), what="the dial to give up")
        assert re.search(r"link b\.relay\.test: cannot connect: TLS handshake failed: no handshake within 1 s",
                         a.log())
        _served_within_a_second(a.irc_port, "probe2")
        assert "Traceback" not in a.log()
    finally:
        a.stop()
        silent.close()


def test_tls_client_reading_and_writing_at_once(make_server):
    """The server reads a TLS client while its writer waits on a full socket (the client reads
    nothing until it has sent everything): both greenlets use one TLS connection."""
    tls_port = free_port()
    make_server(listen=[{"proto": "irc", "host": "127.0.0.1", "port": free_port()},
                        {"proto": "irc", "host": "127.0.0.1", "port": tls_port, "tls": True}],
                limits={"sendq": 64 << 20})  # the replies wait for the client, they are not a slow reader
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    n = 20000
    with socket.create_connection(("127.0.0.1", tls_port), timeout=30) as raw, ctx.wrap_socket(raw) as s:
        s.sendall(b"NICK busy\r\nUSER b 0 * :B\r\n")
        s.sendall(b"".join(b"PING :%d-%s\r\n" % (i, b"x" * 100) for i in range(n)))
        buf = b""
        last = f" {n - 1}-".encode()  # the replies come in order: the last one ends them
        while last not in buf[-1000:]:
            chunk = s.recv(1 << 20)
            assert chunk, buf[-300:]
            buf += chunk
    assert buf.count(b" PONG ") == n


def test_irc_sasl_scram_sha_256_plus_over_tls(make_server):
    """-PLUS is offered on TLS and binds the login to the certificate the client saw (tls-server-end-point)."""
    import base64
    import hashlib

    from scramp import ScramClient

    tls_port = free_port()
    srv = make_server(listen=[{"proto": "irc", "host": "127.0.0.1", "port": free_port()},
                              {"proto": "irc", "host": "127.0.0.1", "port": tls_port, "tls": True}])
    srv.ctl("register", "plususer", "pluspass")
    ctx = ssl.create_default_context(cafile=str(srv.data_dir / "tls" / "cert.pem"))
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", tls_port), timeout=10) as raw, ctx.wrap_socket(raw) as s:
        binding = hashlib.sha256(s.getpeercert(binary_form=True)).digest()
        f = s.makefile("rwb", buffering=0)

        def expect(token: bytes) -> bytes:
            while True:
                line = f.readline()
                assert line, f"closed before {token!r}"
                if token in line:
                    return line.rstrip(b"\r\n")

        s.sendall(b"CAP LS 302\r\n")
        caps = expect(b" LS ")
        assert b"SCRAM-SHA-256-PLUS" in caps
        s.sendall(b"CAP REQ :sasl\r\n")
        expect(b" ACK ")
        sc = ScramClient(["SCRAM-SHA-256-PLUS"], "plususer", "pluspass",
                         channel_binding=("tls-server-end-point", binding))
        s.sendall(b"AUTHENTICATE SCRAM-SHA-256-PLUS\r\n")
        expect(b"AUTHENTICATE +")
        s.sendall(b"AUTHENTICATE " + base64.b64encode(sc.get_client_first().encode()) + b"\r\n")
        sc.set_server_first(base64.b64decode(expect(b"AUTHENTICATE ").split()[-1]).decode())
        s.sendall(b"AUTHENTICATE " + base64.b64encode(sc.get_client_final().encode()) + b"\r\n")
        sc.set_server_final(base64.b64decode(expect(b"AUTHENTICATE ").split()[-1]).decode())
        s.sendall(b"AUTHENTICATE +\r\n")
        assert b" plususer " in expect(b" 900 ")
        expect(b" 903 ")
