"""XEP-0363 HTTP file upload in memory: the service in disco with its max-file-size, slots refused
past the size limit and the quota, PUT only the slotted size and type, only once, only before the
slot expires, then GET back (the HTTP route called as the listener calls it)."""

from __future__ import annotations

import pytest
from xmpp_ext_support import Xmpp, error_of, wire

from relay.core.http_routes import HttpRequest

U = "urn:xmpp:http:upload:0"
LISTEN = {"listen": [{"proto": "http", "host": "127.0.0.1", "port": 5999}]}


@pytest.fixture
def w(tmp_path):
    return wire(tmp_path, config=LISTEN, upload_max_bytes=1000, upload_quota_bytes=1500, upload_slot_ttl=60)


def _slot(c, name: str, size: int, ctype: str = "text/plain"):
    return c.iq(f"<iq type='get' id='u' to='upload.localhost'><request xmlns='{U}' filename='{name}' "
                f"size='{size}' content-type='{ctype}'/></iq>")


def _http(w, method: str, url: str, body: bytes = b"", ctype: str | None = "text/plain"):
    path = url.split("5999", 1)[1]
    headers = [("content-type", ctype)] if ctype else []
    req = HttpRequest(method, path, path, "", headers, body, "127.0.0.1", False)
    route = w.cores["a"].http.find_http(path)
    return route.handler(req, w.now)


def _urls(slot):
    s = slot.find(f"{{{U}}}slot")
    return s.find(f"{{{U}}}put").get("url"), s.find(f"{{{U}}}get").get("url")


def test_disco_shows_the_service_and_its_max_file_size(w):
    alice = Xmpp(w).login("alice")
    items = alice.iq("<iq type='get' id='i' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/>"
                     "</iq>")
    assert "upload.localhost" in [i.get("jid") for i in items[0]]
    info = alice.iq("<iq type='get' id='i' to='upload.localhost'><query "
                    "xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    assert U in [f.get("var") for f in info[0].findall("{http://jabber.org/protocol/disco#info}feature")]
    fields = {f.get("var"): f.findtext("{jabber:x:data}value") for f in info[0].iter("{jabber:x:data}field")}
    assert fields == {"FORM_TYPE": U, "max-file-size": "1000"}


def test_put_once_then_get_back(w):
    alice = Xmpp(w).login("alice")
    put, get = _urls(_slot(alice, "../../etc/notes.txt", 5))
    assert put == get and put.startswith("http://127.0.0.1:5999/upload/") and put.endswith("/notes.txt")
    assert _http(w, "GET", get).status == 404                      # nothing yet
    assert _http(w, "PUT", put, b"hello!").status == 413          # not the slotted size
    assert _http(w, "PUT", put, b"hell").status == 400
    assert _http(w, "PUT", put, b"hello", "image/png").status == 415
    assert _http(w, "PUT", put, b"hello").status == 201
    assert _http(w, "PUT", put, b"HELLO").status == 409            # only once
    got = _http(w, "GET", get)
    assert got.status == 200 and got.body == b"hello" and got.content_type == "text/plain"
    files = list((w.cores["a"].config.data_path / "xmpp-upload").rglob("*"))
    assert [f.name for f in files if f.is_file()] == ["notes.txt"]


def test_a_slot_expires(w):
    alice = Xmpp(w).login("alice")
    put, _ = _urls(_slot(alice, "late.txt", 3))
    w.tick(61)
    assert _http(w, "PUT", put, b"abc").status in (404, 410)


def test_oversized_request_and_the_quota(w):
    alice = Xmpp(w).login("alice")
    big = _slot(alice, "big.bin", 1001)
    assert error_of(big) == "not-acceptable"
    assert big.findtext(f".//{{{U}}}file-too-large/{{{U}}}max-file-size") == "1000"
    assert error_of(_slot(alice, "zero.bin", 0)) == "bad-request"
    put, _ = _urls(_slot(alice, "a.bin", 900))
    assert error_of(_slot(alice, "b.bin", 700)) == "resource-constraint"   # 900 + 700 > 1500 (an open slot counts)
    assert _http(w, "PUT", put, b"x" * 900, None).status == 201
    assert error_of(_slot(alice, "b.bin", 700)) == "resource-constraint"   # a stored file counts
    assert _slot(alice, "c.bin", 600).get("type") == "result"
    bob = Xmpp(w).login("bob")
    assert _slot(bob, "b.bin", 700).get("type") == "result"             # quotas are per account
    assert _http(w, "POST", put).status == 405
