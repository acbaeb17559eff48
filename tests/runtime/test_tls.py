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
