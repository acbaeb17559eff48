"""XEP-0363 HTTP file upload: a service at `upload.<domain>` (listed in the domain's disco#items,
with the max-file-size form in its disco#info) hands out slots; the file is PUT to the slot's URL on
the server's HTTP listener (`/upload/<token>/<name>`) and got back from the same URL.

A slot is refused past `xmpp.upload_max_bytes` (file-too-large, never above `http.max_body_bytes`,
since the HTTP listener bounds bodies) or when the account's files and open slots would pass
`xmpp.upload_quota_bytes` (resource-constraint). A PUT is taken only for a slot not yet used nor
expired (`xmpp.upload_slot_ttl`), of exactly the size asked for and its content type. Files are in
`<data_dir>/xmpp-upload/<token>/`; what they are is in the `xmpp_upload` store, all in memory (a
row per file):

    xmpp_upload(token PK, account (case-folded), name, size {int}, content_type, created {real})

URLs are `xmpp.upload_url` (say, behind a reverse proxy) or made from the first `http` listener.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from lxml import etree

from relay.core.http_routes import HttpResponse
from relay.core.storage import Op, Schema

from .routing import DISCO_INFO, DISCO_ITEMS, XmppHost
from .stanza import element

UPLOAD = "urn:xmpp:http:upload:0"
DATA = "jabber:x:data"
PREFIX = "/upload"
_U = "{%s}" % UPLOAD
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")

# What the store loads when it opens (Schema.loads: each ? is the server's id).
_LOAD = "SELECT token, account, name, size, content_type, created FROM xmpp_upload"

SCHEMA = Schema("xmpp_upload", ("""
CREATE TABLE xmpp_upload (
    token TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    name TEXT NOT NULL,
    size {int} NOT NULL,
    content_type TEXT NOT NULL,
    created {real} NOT NULL
);
""",), tables=("xmpp_upload",), loads=(_LOAD,))


@dataclass(slots=True)
class Slot:
    token: str
    account: str
    name: str          # the file name in the URL and on disk (made safe)
    size: int
    content_type: str
    created: float
    stored: bool = False


def safe_name(filename: str) -> str:
    name = _SAFE_NAME.sub("_", filename.rsplit("/", 1)[-1].rsplit("\\", 1)[-1])[:128].lstrip(".")
    return name or "file"


class Uploads:
    """Slots and stored files, by token; sizes per account for the quota."""

    def __init__(self, storage, directory: Path, opts, max_bytes: int):
        self.storage, self.dir, self.opts, self.max_bytes = storage, directory, opts, max_bytes
        self.slots: dict[str, Slot] = {}

    def load(self) -> None:
        self.storage.open_store(SCHEMA)
        for token, account, name, size, ctype, created in self.storage.load(_LOAD):
            self.slots[token] = Slot(token, account, name, size, ctype, created, stored=True)

    def used(self, account: str, now: float) -> int:
        """Bytes the account holds: its files and its open slots."""
        return sum(s.size for s in self.slots.values() if s.account == account
                   and (s.stored or now - s.created <= self.opts.upload_slot_ttl))

    def sweep(self, now: float) -> None:
        ttl = self.opts.upload_slot_ttl
        for t in [t for t, s in self.slots.items() if not s.stored and now - s.created > ttl]:
            del self.slots[t]

    def new_slot(self, account: str, filename: str, size: int, ctype: str, now: float) -> Slot:
        self.sweep(now)
        slot = Slot(secrets.token_urlsafe(18), account, safe_name(filename), size, ctype, now)
        self.slots[slot.token] = slot
        return slot

    def path(self, slot: Slot) -> Path:
        return self.dir / slot.token / slot.name

    def store(self, slot: Slot, body: bytes) -> None:
        p = self.path(slot)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".part")
        tmp.write_bytes(body)
        tmp.replace(p)
        slot.stored = True
        self.storage.queue.put(Op("INSERT INTO xmpp_upload(token, account, name, size, content_type, created) "
                                  "VALUES (?,?,?,?,?,?)", (slot.token, slot.account, slot.name, slot.size,
                                                           slot.content_type, slot.created)))


def base_url(core, opts) -> str:
    if opts.upload_url:
        return opts.upload_url.rstrip("/")
    for l in core.config.listen:
        if l.proto == "http":
            host = opts.domain if l.host in ("0.0.0.0", "::", "") else l.host
            if ":" in host:
                host = f"[{host}]"
            return f"{'https' if l.tls else 'http'}://{host}:{l.port}{PREFIX}"
    return f"http://{opts.domain}{PREFIX}"


def install(module, svc) -> None:
    core, r, opts = module.core, svc.router, svc.opts
    max_bytes = min(opts.upload_max_bytes, core.config.http.max_body_bytes)
    uploads = Uploads(core.storage, core.config.data_path / "xmpp-upload", opts, max_bytes)
    uploads.load()
    svc.uploads = uploads
    domain = f"upload.{svc.domain}"

    def error(s, iq, kind: str, condition: str, extra: etree._Element | None = None, text: str = "") -> None:
        reply = element("iq", {"type": "error", "id": iq.get("id"), "from": domain})
        err = etree.SubElement(reply, "{jabber:client}error", type=kind)
        etree.SubElement(err, "{urn:ietf:params:xml:ns:xmpp-stanzas}%s" % condition,
                         nsmap={None: "urn:ietf:params:xml:ns:xmpp-stanzas"})
        if text:
            etree.SubElement(err, "{urn:ietf:params:xml:ns:xmpp-stanzas}text",
                             nsmap={None: "urn:ietf:params:xml:ns:xmpp-stanzas"}).text = text
        if extra is not None:
            err.append(extra)
        r.to_full(s, reply)

    def result(s, iq, payload: etree._Element | None) -> None:
        reply = element("iq", {"type": "result", "id": iq.get("id"), "from": domain})
        if payload is not None:
            reply.append(payload)
        r.to_full(s, reply)

    # <iq type='get' to='upload.domain'><query xmlns='...disco#info'/></iq>
    def disco_info(s, iq):
        q = etree.Element("{%s}query" % DISCO_INFO, nsmap={None: DISCO_INFO})
        etree.SubElement(q, "{%s}identity" % DISCO_INFO, category="store", type="file", name="HTTP File Upload")
        for f in (DISCO_INFO, UPLOAD):
            etree.SubElement(q, "{%s}feature" % DISCO_INFO, var=f)
        x = etree.SubElement(q, "{%s}x" % DATA, nsmap={None: DATA}, type="result")
        for var, value in (("FORM_TYPE", UPLOAD), ("max-file-size", str(max_bytes))):
            f = etree.SubElement(x, "{%s}field" % DATA, var=var)
            if var == "FORM_TYPE":
                f.set("type", "hidden")
            etree.SubElement(f, "{%s}value" % DATA).text = value
        result(s, iq, q)

    # <iq type='get' to='upload.domain'><request xmlns='urn:xmpp:http:upload:0' filename='F' size='N'
    #   [content-type='T']/></iq>
    def request(s, iq, now):
        req = iq[0]
        filename, size_text = req.get("filename"), req.get("size", "")
        if not filename or not size_text.isdigit() or not size_text.isascii() or int(size_text) <= 0:
            error(s, iq, "modify", "bad-request", text="filename and a positive size are needed")
            return
        size = int(size_text)
        if size > max_bytes:
            too = etree.Element(_U + "file-too-large", nsmap={None: UPLOAD})
            etree.SubElement(too, _U + "max-file-size").text = str(max_bytes)
            error(s, iq, "modify", "not-acceptable", too, f"the largest file is {max_bytes} bytes")
            return
        account = s.account.lower()
        if uploads.used(account, now) + size > opts.upload_quota_bytes:
            error(s, iq, "wait", "resource-constraint", text="upload quota reached")
            return
        ctype = req.get("content-type") or "application/octet-stream"
        slot = uploads.new_slot(account, filename, size, ctype, now)
        url = f"{base_url(core, opts)}/{slot.token}/{quote(slot.name)}"
        el = etree.Element(_U + "slot", nsmap={None: UPLOAD})
        etree.SubElement(el, _U + "put", url=url)
        etree.SubElement(el, _U + "get", url=url)
        result(s, iq, el)

    def handler(s, iq, to, now):
        if etree.QName(iq).localname != "iq" or iq.get("type") not in ("get", "set"):
            return
        if to.local is None and to.resource is None and iq.get("type") == "get" and len(iq) == 1:
            tag = iq[0].tag
            if tag == "{%s}query" % DISCO_INFO and not iq[0].get("node"):
                disco_info(s, iq)
                return
            if tag == "{%s}query" % DISCO_ITEMS:
                result(s, iq, etree.Element("{%s}query" % DISCO_ITEMS, nsmap={None: DISCO_ITEMS}))
                return
            if tag == _U + "request":
                request(s, iq, now)
                return
        error(s, iq, "cancel", "service-unavailable")

    # PUT|GET|HEAD /upload/<token>/<name>
    def http(req, now):
        parts = req.path[len(PREFIX):].strip("/").split("/")
        slot = uploads.slots.get(parts[0]) if len(parts) == 2 else None
        if slot is None or unquote(parts[1]) != slot.name:
            return HttpResponse(404, body=b"no such file\n")
        if req.method == "PUT":
            return put(slot, req, now)
        if req.method in ("GET", "HEAD"):
            if not slot.stored:
                return HttpResponse(404, body=b"no such file\n")
            try:
                body = uploads.path(slot).read_bytes()
            except OSError:
                return HttpResponse(404, body=b"file gone\n")
            return HttpResponse(200, [("Cache-Control", "public, max-age=31536000, immutable")], body,
                                content_type=slot.content_type)
        return HttpResponse(405, [("Allow", "GET, HEAD, PUT")], b"method not allowed\n")

    def put(slot: Slot, req, now):
        if slot.stored:
            return HttpResponse(409, body=b"this slot was used already\n")
        if now - slot.created > opts.upload_slot_ttl:
            uploads.slots.pop(slot.token, None)
            return HttpResponse(410, body=b"this slot has expired\n")
        if len(req.body) != slot.size:
            return HttpResponse(413 if len(req.body) > slot.size else 400,
                                body=b"the body is not the size the slot was asked for\n")
        ctype = (req.header("content-type") or "").split(";")[0].strip().lower()
        if ctype and ctype != slot.content_type.split(";")[0].strip().lower():
            return HttpResponse(415, body=b"not the content type the slot was asked for\n")
        try:
            uploads.store(slot, req.body)
        except OSError as e:
            module.log.error("upload %s: cannot store the file: %s", slot.token, e)
            return HttpResponse(500, body=b"cannot store the file\n")
        return HttpResponse(201, body=b"")

    module.add_item("xmpp-host", XmppHost(domain, handler, "HTTP File Upload", "store", "file"))
    module.http_route(PREFIX, http)
    module.every(60.0, uploads.sweep)
