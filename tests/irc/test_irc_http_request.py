"""An HTTP request sent to the IRC port (a browser, curl, a scanner) gets one ERROR line and is closed
before it registers, and the refusal is logged at info; a registered client's GET is just unknown."""

from __future__ import annotations

import http.client
import re

import pytest
from ircsupport import RawIrc, uniq

REASON = "This is an IRC server, not a web server: connect with an IRC client"


@pytest.mark.parametrize("method,target", [("GET", "/"), ("POST", "/api/x"), ("HEAD", "/"),
                                           ("OPTIONS", "*"), ("CONNECT", "example.com:443")])
def test_http_request_gets_error_and_is_closed(irc, method, target):
    c = RawIrc(irc.port)
    irc.clients.append(c)
    c.send_raw(f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/8\r\n"
               f"Content-Length: 0\r\n\r\n".encode())
    # Closed well before the registration timeout (30 s), with nothing but the ERROR line.
    assert c.closed(timeout=10)
    assert [m.raw for m in c.seen] == [f"ERROR :Closing Link: 127.0.0.1 ({REASON})"]
    assert re.search(rf" INFO +relay\.irc: IRC connection from 127\.0\.0\.1 refused: it sent an HTTP "
                     rf"request \({method} '{re.escape(target)}'\)", irc.log())


def test_a_real_http_client_gets_no_http_answer(irc):
    conn = http.client.HTTPConnection("127.0.0.1", irc.port, timeout=10)
    conn.request("GET", "/index.html")
    with pytest.raises(http.client.BadStatusLine) as e:   # the ERROR line is not an HTTP status line
        conn.getresponse()
    assert REASON in str(e.value)
    conn.close()


def test_registered_client_sending_get_gets_421_and_stays(irc):
    c = irc.raw(uniq("hg"))
    c.send("GET / HTTP/1.1")
    m = c.expect("421")
    assert m.params[1:] == ["GET", "Unknown command"]
    c.send("PING :still")
    assert c.expect("PONG").params[-1] == "still"
