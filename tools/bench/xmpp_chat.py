"""One-to-one XMPP chat through relaynet (not a test): messages per second from one client to another.

    .venv/bin/python -m tools.bench.xmpp_chat [--duration 5] [--window 64] [--pairs 1] [--sm]

Starts one relaynet server (pinned to core 0, as the other scenarios do) with the xmpp module and
a direct-TLS listener, registers the accounts, and logs in raw-socket clients (TLS, SASL PLAIN,
bind, initial presence; XEP-0198 with `--sm`, the receiver answering the server's `<r/>`). Each
sender keeps `window` chat messages in flight (closed loop: a new one when its receiver got one);
the receivers count what arrives. Prints messages/s over the window after a warmup, and the
median and p99 latency of the messages of that window. Loopback only; bounded in time.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from .servers import RELAYCTL, Relaynet, free_port

HEADER = (b"<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams'>")
_R = re.compile(rb"<r xmlns=\"urn:xmpp:sm:3\"/>")


class Client:
    def __init__(self, port: int, account: str, sm: bool):
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        self.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30))
        self.buf = b""
        self.exchange(HEADER, b"</stream:features>")
        plain = base64.b64encode(f"\0{account}\0secret".encode())
        self.exchange(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" + plain + b"</auth>",
                      b"<success")
        self.exchange(HEADER, b"</stream:features>")
        self.exchange(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>bench"
                      b"</resource></bind></iq>", b"</jid>")
        if sm:
            self.exchange(b"<enable xmlns='urn:xmpp:sm:3' resume='true'/>", b"<enabled")
        self.sock.sendall(b"<presence/>")
        self.h = 0

    def exchange(self, data: bytes, until: bytes) -> None:
        self.sock.sendall(data)
        while until not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"closed while waiting for {until!r}: {self.buf[-300:]!r}")
            self.buf += chunk
        self.buf = self.buf[self.buf.index(until) + len(until):]


def run(duration: float, window: int, pairs: int, sm: bool, warmup: float = 1.0) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="xmpp-chat-"))
    port = free_port()
    cfg = Relaynet.config_for("chat.relay.bench", "001", listen=[{"proto": "xmpp", "host": "127.0.0.1",
                                                                  "port": port, "tls": True}],
                              modules={"xmpp": {}})
    srv = Relaynet(tmp / "relaynet", cfg).start()
    try:
        for i in range(pairs):
            for who in ("s", "r"):
                subprocess.run([RELAYCTL, "register", "-c", str(srv.path), f"{who}{i}", "secret"], check=True,
                               capture_output=True, timeout=60)
        senders = [Client(port, f"s{i}", sm) for i in range(pairs)]
        receivers = [Client(port, f"r{i}", sm) for i in range(pairs)]
        stop = time.monotonic() + warmup + duration
        t0, t1 = time.monotonic() + warmup, stop
        counts, lat = [0] * pairs, []

        def receive(i: int, c: Client, credit: threading.Semaphore):
            c.sock.settimeout(5)
            data = c.buf
            while time.monotonic() < stop:
                try:
                    chunk = c.sock.recv(262144)
                except (TimeoutError, socket.timeout):
                    break
                if not chunk:
                    break
                data += chunk
                end = data.rfind(b"</message>")
                if end < 0:
                    continue
                done, data = data[:end + 10], data[end + 10:]
                now = time.monotonic()
                n = done.count(b"</message>")
                if sm:
                    c.h += n
                    if _R.search(done):
                        c.sock.sendall(b"<a xmlns='urn:xmpp:sm:3' h='%d'/>" % c.h)
                if t0 <= now <= t1:
                    counts[i] += n
                    for m in re.finditer(rb"<body>(\d+\.\d+)</body>", done):
                        lat.append(now - float(m.group(1)))
                for _ in range(n):
                    credit.release()

        def send(i: int, c: Client, credit: threading.Semaphore):
            while time.monotonic() < stop:
                if not credit.acquire(timeout=1):
                    continue
                c.sock.sendall(b"<message type='chat' to='r%d@localhost'><body>%.6f</body></message>"
                               % (i, time.monotonic()))

        threads = []
        for i in range(pairs):
            credit = threading.Semaphore(window)
            threads += [threading.Thread(target=receive, args=(i, receivers[i], credit)),
                        threading.Thread(target=send, args=(i, senders[i], credit), daemon=True)]
        for t in threads:
            t.start()
        for t in threads[::2]:
            t.join()
        lat.sort()
        total = sum(counts)
        return {"messages_per_s": round(total / duration), "messages": total,
                "p50_ms": round(lat[len(lat) // 2] * 1000, 2) if lat else None,
                "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 2) if lat else None,
                "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3])}
    finally:
        srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--pairs", type=int, default=1)
    ap.add_argument("--sm", action="store_true", help="XEP-0198 enabled on every client")
    a = ap.parse_args()
    try:
        os.sched_setaffinity(0, {1})             # the load off the server's core
    except (AttributeError, OSError):
        pass
    print(run(a.duration, a.window, a.pairs, a.sm))


if __name__ == "__main__":
    main()
