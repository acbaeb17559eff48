"""The end of a c2s stream, over real sockets: whoever closes, the server's `</stream:stream>` comes
last, then (over TLS) its close_notify, then TCP's FIN. A raw TLS socket that does not suppress
ragged EOFs tells a clean end from a cut one; slixmpp's disconnect() must end on the server's
stream close, not on its own 2 s timeout."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest
from xmpp_live import WAIT, make_client, online, xmpp_server

slixmpp = pytest.importorskip("slixmpp")

HEADER = (b"<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams'>")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = xmpp_server(tmp_path_factory.mktemp("close"))
    yield s
    s.stop()


class Stream:
    """One raw client stream; `read_to_end` asserts the server's footer and a clean end."""

    def __init__(self, srv, direct_tls: bool):
        self.srv = srv
        self.sock = socket.create_connection(("127.0.0.1", srv.ports["tls" if direct_tls else "c2s"]), timeout=WAIT)
        self.buf = b""
        if direct_tls:
            self.tls()

    def tls(self):
        ctx = ssl.create_default_context(cafile=str(self.srv.data_dir / "tls" / "cert.pem"))
        # suppress_ragged_eofs=False: a FIN without close_notify raises SSLEOFError.
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost", suppress_ragged_eofs=False)

    def send(self, data: bytes):
        self.sock.sendall(data)

    def read_until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            data = self.sock.recv(65536)
            assert data, f"EOF before {marker!r}; got {self.buf!r}"
            self.buf += data
        head, _, self.buf = self.buf.partition(marker)
        return head + marker

    def read_to_end(self) -> bytes:
        """Everything up to the footer, which must be last; then EOF (a clean one over TLS)."""
        got = self.read_until(b"</stream:stream>")
        while True:
            data = self.sock.recv(65536)
            if not data:
                break
            self.buf += data
        assert self.buf == b"", f"bytes after the stream's end: {self.buf!r}"
        self.sock.close()
        return got

    def starttls(self):
        self.send(HEADER)
        self.read_until(b"</stream:features>")
        self.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.read_until(b"<proceed")
        self.read_until(b"/>")
        self.tls()
        self.send(HEADER)
        self.read_until(b"</stream:features>")


@pytest.mark.parametrize("how", ["plain", "starttls", "direct-tls"])
def test_client_close_is_answered_with_the_footer_then_a_clean_end(srv, how):
    s = Stream(srv, direct_tls=how == "direct-tls")
    if how == "starttls":
        s.starttls()
    else:
        s.send(HEADER)
        s.read_until(b"</stream:features>")
    s.send(b"</stream:stream>")
    assert s.read_to_end() == b"</stream:stream>"


@pytest.mark.parametrize("how", ["starttls", "direct-tls"])
def test_stream_error_ends_with_the_footer_then_a_clean_end(srv, how):
    s = Stream(srv, direct_tls=how == "direct-tls")
    if how == "starttls":
        s.starttls()
    else:
        s.send(HEADER)
        s.read_until(b"</stream:features>")
    s.send(b"<message><unclosed></message>")
    got = s.read_to_end()
    assert b"<not-well-formed" in got and got.endswith(b"</stream:error></stream:stream>"), got


def test_shutdown_closes_every_stream_cleanly(tmp_path):
    own = xmpp_server(tmp_path / "s")
    try:
        streams = [Stream(own, direct_tls=True), Stream(own, direct_tls=False)]
        streams[1].starttls()
        streams[0].send(HEADER)
        streams[0].read_until(b"</stream:features>")
        own.stop()
        for s in streams:
            assert b"<system-shutdown" in s.read_to_end()
    finally:
        own.stop()


@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct-tls"])
def test_slixmpp_disconnect_ends_on_the_servers_stream_close(srv, direct_tls):
    async def main():
        c = await online(make_client(slixmpp, "alice@localhost/close", "secret", srv, direct_tls=direct_tls), srv,
                         direct_tls=direct_tls)
        loop = asyncio.get_running_loop()
        why = loop.create_future()
        c.add_event_handler("disconnected", lambda reason: why.done() or why.set_result(reason))
        # wait=WAIT: had the server not closed the stream, slixmpp would abort only after WAIT seconds
        # and report no reason; "End of stream" is its parser seeing our </stream:stream>.
        await asyncio.wait_for(c.disconnect(wait=WAIT), WAIT + 5)
        assert why.done() and why.result() == "End of stream", why
    asyncio.run(main())
