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
