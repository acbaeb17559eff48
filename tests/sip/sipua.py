"""A tiny SIP user agent for tests, over UDP, TCP or WebSocket (RFC 7118, websocket-client), built from the codec and digest modules: it sends
requests, answers digest challenges, and collects the requests the server sends it (and answers them
200). Blocking sockets with timeouts; nothing here sleeps."""

from __future__ import annotations

import os
import socket
import time

from bridges.sip.codec import RequestReceived, ResponseReceived, SipStreamConnection, parse_datagram, serialise
from bridges.sip.digest import authorization, parse_challenge
from bridges.sip.headers import Headers
from bridges.sip.message import Request, make_response


class UA:
    def __init__(self, server_port: int, user: str | None = None, password: str | None = None,
                 transport: str = "UDP", domain: str = "localhost", host: str = "127.0.0.1", bind: str = "127.0.0.1"):
        self.server = (host, server_port)
        self.user, self.password, self.domain = user, password, domain
        self.transport = transport
        if transport == "WS":
            import websocket   # websocket-client
            self.sock = websocket.create_connection(f"ws://{host}:{server_port}/sip", subprotocols=["sip"],
                                                    timeout=10)
            self.addr, self.port = f"{os.urandom(5).hex()}.invalid", None   # RFC 7118 §5.2
            self.hostport = self.addr
        elif transport == "UDP":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((bind, 0))
        else:
            self.sock = socket.create_connection(self.server, timeout=10, source_address=(bind, 0))
            self.stream = SipStreamConnection()
        if transport != "WS":
            self.sock.settimeout(10)
            self.addr, self.port = self.sock.getsockname()[:2]
            self.hostport = f"{self.addr}:{self.port}"
        self.call_id = os.urandom(8).hex()
        self.cseq = 0
        self.tag = os.urandom(4).hex()
        self.inbox: list[Request] = []     # requests the server sent us
        self.pending: list = []

    @property
    def contact(self) -> str:
        return f"sip:{self.user}@{self.hostport};transport={self.transport.lower()}"

    def close(self):
        self.sock.close()

    # -------------------------------------------------------------- bytes
    def send_bytes(self, data: bytes):
        if self.transport == "UDP":
            self.sock.sendto(data, self.server)
        elif self.transport == "WS":
            self.sock.send(data.decode("utf-8"))     # one SIP message, one text frame
        else:
            self.sock.sendall(data)

    def _events(self, timeout: float):
        self.sock.settimeout(timeout)
        if self.transport == "WS":
            import websocket
            try:
                data = self.sock.recv()
            except websocket.WebSocketTimeoutException:
                raise socket.timeout("timed out") from None
            return [parse_datagram(data.encode("utf-8") if isinstance(data, str) else data)]
        if self.transport == "UDP":
            data, _ = self.sock.recvfrom(65535)
            return [parse_datagram(data)]
        data = self.sock.recv(65535)
        if not data:
            raise ConnectionError("closed")
        return self.stream.receive_data(data)

    def next_message(self, timeout: float = 10.0):
        """The next response (requests that arrive meanwhile are answered 200 and kept in inbox)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.pending:
                return self.pending.pop(0)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no SIP response")
            for ev in self._events(left):
                if isinstance(ev, RequestReceived):
                    self.inbox.append(ev.request)
                    self._answer(ev.request)
                elif isinstance(ev, ResponseReceived):
                    self.pending.append(ev.response)

    def _answer(self, req: Request):
        """200 to anything but ACK; a UAS copies Record-Route into its 2xx and says where it is."""
        if req.method == "ACK":
            return
        extra = [("Record-Route", v) for v in req.headers.fields("Record-Route")]
        if req.method == "INVITE":
            extra.append(("Contact", f"<{self.contact}>"))
        self.send_bytes(serialise(make_response(req, 200, extra=extra)))

    def wait_request(self, method: str, timeout: float = 10.0) -> Request:
        deadline = time.monotonic() + timeout
        while True:
            for r in self.inbox:
                if r.method == method:
                    self.inbox.remove(r)
                    return r
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {method} arrived")
            try:
                for ev in self._events(left):
                    if isinstance(ev, RequestReceived):
                        self.inbox.append(ev.request)
                        self._answer(ev.request)
                    elif isinstance(ev, ResponseReceived):
                        self.pending.append(ev.response)
            except socket.timeout:
                continue

    # -------------------------------------------------------------- requests
    def request(self, method: str, uri: str, to: str | None = None, extra=(), body: bytes = b"",
                from_user: str | None = None, content_type: str | None = None) -> Request:
        self.cseq += 1
        h = Headers()
        h.add("Via", f"SIP/2.0/{self.transport} {self.hostport};branch=z9hG4bK{os.urandom(6).hex()};rport")
        h.add("Max-Forwards", "70")
        h.add("From", f"<sip:{from_user or self.user}@{self.domain}>;tag={self.tag}")
        h.add("To", f"<{to or uri}>")
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{self.cseq} {method}")
        for name, value in extra:
            h.add(name, value)
        if body:
            h.add("Content-Type", content_type or "text/plain")
        return Request(method, uri, h, body)

    def send(self, req: Request):
        self.send_bytes(serialise(req))

    def transact(self, req: Request, auth: bool = True, timeout: float = 10.0, password: str | None = None):
        """Send, answer one 401/407 challenge, return the final response."""
        self.send(req)
        while True:
            resp = self.next_message(timeout)
            if resp.status >= 200:
                break
        if auth and resp.status in (401, 407):
            self.send(self.authorized(req, resp, password))
            while True:
                resp = self.next_message(timeout)
                if resp.status >= 200:
                    break
        return resp

    def authorized(self, req: Request, challenge, password: str | None = None) -> Request:
        """`req` again (new branch and CSeq) with credentials for the 401/407 `challenge`."""
        header = "WWW-Authenticate" if challenge.status == 401 else "Proxy-Authenticate"
        ch = parse_challenge(challenge.headers.get(header))
        self.cseq += 1
        h = req.headers.copy()
        h.set("CSeq", f"{self.cseq} {req.method}")
        h.set("Via", f"SIP/2.0/{self.transport} {self.hostport};branch=z9hG4bK{os.urandom(6).hex()};rport")
        h.add("Authorization" if challenge.status == 401 else "Proxy-Authorization",
              authorization(self.user, ch["realm"], password or self.password, ch["nonce"], req.method,
                            req.uri_text, ch.get("algorithm", "MD5")))
        self.last_authorized = Request(req.method, req.uri_text, h, req.body)
        return self.last_authorized

    def register(self, expires: int = 600, contact: str | None = None):
        req = self.request("REGISTER", f"sip:{self.domain}", to=f"sip:{self.user}@{self.domain}",
                           extra=[("Contact", f"<{contact or self.contact}>"), ("Expires", str(expires))])
        return self.transact(req)
