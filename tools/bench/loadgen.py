"""The load generator: raw non-blocking sockets under one epoll, parsing only what it must.

Everything here runs in the benchmark process, which is pinned to the load
generator's core. Two kinds of work:

* set-up (connect, register, join, subscribe): line/packet parsing, not timed
  except for the handshake rate of the idle-connections scenario;
* measurement loops (`irc_flood`, `mqtt_flood`): a closed-loop window (each
  sender keeps at most `window` messages in flight, "in flight" meaning sent
  but not yet seen by a reference receiver), deliveries counted at every
  receiver, latency from a send timestamp embedded in each payload.

Payload (64 bytes): 2 digits sender index, 10 digits sequence number, 20 digits
send time (time.perf_counter_ns of this process), padding.
"""

from __future__ import annotations

import errno
import os
import re
import resource
import select
import socket
import time
from collections import deque

PAYLOAD_LEN = 64
RECV = 262144
_IRC_PAY = re.compile(rb" PRIVMSG \S+ :?(\d\d)(\d{10})(\d{20})")
_PAD = b"x" * PAYLOAD_LEN
EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP = select.EPOLLIN, select.EPOLLOUT, select.EPOLLERR, select.EPOLLHUP


def payload(sender: int, seq: int, t_ns: int) -> bytes:
    head = b"%02d%010d%020d" % (sender, seq, t_ns)
    return head + _PAD[: PAYLOAD_LEN - len(head)]


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (1_048_576, 262_144, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
            return want
        except (ValueError, OSError):
            continue
    return soft


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


class BenchError(Exception):
    pass


# ====================================================================== connections
class Conn:
    """One client socket. `group` labels the server it is on (tree scenarios)."""

    __slots__ = ("sock", "fd", "buf", "name", "group", "state", "t0", "out", "closed", "proto", "extra")

    def __init__(self, sock: socket.socket, name: str, group: int = 0, proto: str = "irc"):
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = bytearray()
        self.name = name
        self.group = group
        self.state = 0
        self.t0 = 0.0
        self.out = b""
        self.closed = False
        self.proto = proto
        self.extra = None

    def send_all(self, data: bytes, timeout: float = 10.0) -> None:
        """Send everything (set-up only: blocks with a deadline)."""
        deadline = time.monotonic() + timeout
        view = memoryview(data)
        while view:
            try:
                n = self.sock.send(view)
                view = view[n:]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BenchError(f"{self.name}: send timed out")
                select.select([], [self.sock], [], 0.05)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass


def _new_socket(src_ip: str | None) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if src_ip:
        s.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24), 1)
        s.bind((src_ip, 0))
    return s


def _irc_pong(c: Conn, data: bytes) -> None:
    """Answer PINGs found in data (set-up and idle phases; rare during measurement)."""
    for line in data.split(b"\n"):
        line = line.strip()
        if line.startswith(b"PING"):
            try:
                c.sock.send(b"PONG" + line[4:] + b"\r\n")
            except OSError:
                pass


# ---------------------------------------------------------------------- IRC set-up
def irc_connect(host: str, port: int, nicks: list[str], concurrency: int = 10, timeout: float = 60.0,
                group: int = 0, src_ips: list[str] | None = None, per_conn_timeout: float = 30.0,
                stop_after_failures: int | None = None) -> tuple[list[Conn], dict]:
    """Connect and register clients (NICK/USER until end of MOTD), `concurrency` at a time.

    Returns the registered connections and stats: elapsed, failures, per-handshake times.
    """
    ep = select.epoll()
    todo = deque(enumerate(nicks))
    active: dict[int, Conn] = {}
    done: list[Conn] = []
    times: list[float] = []
    failures = 0
    consecutive = 0
    errors: dict[str, int] = {}
    t_start = time.monotonic()
    deadline = t_start + timeout

    def fail(c: Conn, why: str) -> None:
        nonlocal failures, consecutive
        failures += 1
        consecutive += 1
        errors[why] = errors.get(why, 0) + 1
        try:
            ep.unregister(c.fd)
        except (OSError, ValueError):
            pass
        active.pop(c.fd, None)
        c.close()

    while (todo or active) and time.monotonic() < deadline:
        if stop_after_failures is not None and consecutive >= stop_after_failures:
            break
        while todo and len(active) < concurrency:
            i, nick = todo.popleft()
            src = src_ips[i % len(src_ips)] if src_ips else None
            try:
                s = _new_socket(src)
            except OSError as e:
                errors[f"socket: {e.strerror}"] = errors.get(f"socket: {e.strerror}", 0) + 1
                failures += 1
                consecutive += 1
                if e.errno in (errno.EMFILE, errno.ENFILE):
                    todo.clear()
                break
            c = Conn(s, nick, group)
            c.extra = i
            c.t0 = time.monotonic()
            err = s.connect_ex((host, port))
            if err not in (0, errno.EINPROGRESS):
                s.close()
                failures += 1
                consecutive += 1
                errors[os.strerror(err)] = errors.get(os.strerror(err), 0) + 1
                continue
            active[c.fd] = c
            ep.register(c.fd, EPOLLOUT | EPOLLIN)
        now = time.monotonic()
        for fd, ev in ep.poll(0.05):
            c = active.get(fd)
            if c is None:
                continue
            if c.state == 0:
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(c, os.strerror(err))
                    continue
                c.state = 1
                ep.modify(fd, EPOLLIN)
                try:
                    c.sock.send(b"NICK %s\r\nUSER %s 0 * :bench %s\r\n" % (c.name.encode(), c.name.encode(),
                                                                          c.name.encode()))
                except OSError as e:
                    fail(c, f"send: {e.strerror}")
                continue
            try:
                data = c.sock.recv(RECV)
            except BlockingIOError:
                continue
            except OSError as e:
                fail(c, f"recv: {e.strerror}")
                continue
            if not data:
                fail(c, "closed by server")
                continue
            c.buf += data
            if b"PING" in data:
                _irc_pong(c, data)
            if b" 376 " in c.buf or b" 422 " in c.buf:
                times.append(time.monotonic() - c.t0)
                ep.unregister(fd)
                del active[fd]
                c.buf.clear()
                c.state = 2
                done.append(c)
                consecutive = 0
            elif b"ERROR" in c.buf or b" 433 " in c.buf:
                fail(c, c.buf.decode(errors="replace").strip().splitlines()[-1][:120])
        if per_conn_timeout:
            now = time.monotonic()
            for c in [c for c in active.values() if now - c.t0 > per_conn_timeout]:
                fail(c, "registration timed out")
    for c in list(active.values()):
        fail(c, "unfinished at deadline")
    ep.close()
    done.sort(key=lambda c: c.extra)  # in the order of `nicks`, whatever order they finished in
    return done, {"elapsed": time.monotonic() - t_start, "failures": failures, "errors": errors,
                  "handshake_times": times, "registered": len(done)}


def irc_command_all(conns: list[Conn], make_line, token: bytes, timeout: float = 60.0,
                    concurrency: int = 100, count: int = 1) -> None:
    """Send one command per connection and wait until each has seen `token` `count` times."""
    ep = select.epoll()
    todo = deque(conns)
    active: dict[int, Conn] = {}
    deadline = time.monotonic() + timeout
    while todo or active:
        if time.monotonic() > deadline:
            raise BenchError(f"timed out waiting for {token!r} ({len(active) + len(todo)} connections left)")
        while todo and len(active) < concurrency:
            c = todo.popleft()
            c.buf.clear()
            c.send_all(make_line(c))
            active[c.fd] = c
            ep.register(c.fd, EPOLLIN)
        for fd, ev in ep.poll(0.05):
            c = active[fd]
            try:
                data = c.sock.recv(RECV)
            except BlockingIOError:
                continue
            if not data:
                raise BenchError(f"{c.name}: connection closed by the server: {bytes(c.buf[-300:])!r}")
            c.buf += data
            if b"PING" in data:
                _irc_pong(c, data)
            if c.buf.count(token) >= count:
                ep.unregister(fd)
                del active[fd]
                c.buf.clear()
    ep.close()


def drain(conns: list[Conn], quiet: float = 0.3, timeout: float = 30.0, on_data=None) -> int:
    """Read and discard until nothing arrives for `quiet` seconds. Returns bytes read."""
    ep = select.epoll()
    by_fd = {c.fd: c for c in conns if not c.closed}
    for fd in by_fd:
        ep.register(fd, EPOLLIN)
    total = 0
    last = time.monotonic()
    deadline = last + timeout
    while True:
        now = time.monotonic()
        if now - last >= quiet or now > deadline:
            break
        for fd, ev in ep.poll(0.05):
            c = by_fd[fd]
            try:
                data = c.sock.recv(RECV)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                ep.unregister(fd)
                c.closed = True
                continue
            total += len(data)
            last = time.monotonic()
            if on_data is not None:
                on_data(c, data)
            elif c.proto == "irc" and b"PING" in data:
                _irc_pong(c, data)
    ep.close()
    return total


def close_all(conns: list[Conn]) -> None:
    for c in conns:
        c.close()


# ====================================================================== IRC measurement loop
class FloodResult(dict):
    pass


class _Window:
    """The closed loop: at most `limit` messages in flight, i.e. sent but not yet received by the
    slowest receiver (a receiver's progress = messages received + its own messages, which IRC
    does not echo). The minimum is recomputed only when the window looks nearly full, from
    counters that only grow, so a stale value only errs on the safe side."""

    __slots__ = ("limit", "counts", "plain", "own", "sent", "floor")

    def __init__(self, limit: int, counts: list[int], plain: list[int], own: list[tuple[int, int]], sent: list[int]):
        self.limit, self.counts, self.plain, self.own, self.sent = limit, counts, plain, own, sent
        self.floor = 0

    def room(self, total_sent: int, force: bool = False) -> int:
        if force or (total_sent - self.floor) * 4 > self.limit * 3:
            c = self.counts
            m = min([c[i] for i in self.plain]) if self.plain else 1 << 62
            for i, s in self.own:
                v = c[i] + self.sent[s]
                if v < m:
                    m = v
            self.floor = m
        return self.limit - (total_sent - self.floor)


def irc_flood(conns: list[Conn], senders: list[Conn], ref: Conn, target: str, *, window: int,
              warmup: float, duration: float, rate: float | None = None, lat_all: bool = False,
              server_procs=(), drain_timeout: float = 15.0, batch_delay: float = 0.002) -> FloodResult:
    """Channel flood through IRC: `senders` PRIVMSG `target`; every conn counts PRIVMSG lines.

    rate None: saturation, a closed loop of window*len(senders) messages in flight (see _Window);
    the loop sleeps batch_delay between polls so reads come in batches whatever the server's
    write pattern (cheaper per delivery; the window keeps the server busy meanwhile).
    rate R: paced, R messages/s in total (round robin over senders), still window-bounded.
    Latency: parsed at `ref` always, at every receiver when lat_all.
    """
    n = len(conns)
    S = len(senders)
    idx = {c.fd: i for i, c in enumerate(conns)}
    sender_of = {idx[c.fd]: s for s, c in enumerate(senders)}
    ref_i = idx[ref.fd]
    socks = [c.sock for c in conns]
    groups = [c.group for c in conns]
    counts = [0] * n
    carry = [b""] * n
    parse = [lat_all or i == ref_i for i in range(n)]
    ngroups = max(groups) + 1
    lat: list[list[float]] = [[] for _ in range(ngroups)]
    sent = [0] * S
    pending = [b""] * S
    ssocks = [c.sock for c in senders]
    win = _Window(window * S, counts, [i for i in range(n) if i not in sender_of], list(sender_of.items()), sent)
    prefix = b"PRIVMSG %s :" % target.encode()
    ep = select.epoll()
    for c in conns:
        ep.register(c.fd, EPOLLIN)
    perf_ns = time.perf_counter_ns
    perf = time.perf_counter
    sleep = time.sleep
    t_start = perf()
    t0 = t_start + warmup
    t1 = t0 + duration
    snap0 = snap1 = None
    gsnap0 = gsnap1 = None
    cpu0 = cpu1 = 0.0
    srv0 = srv1 = ticks0 = ticks1 = None
    in_window = False
    measuring = True
    interval = 1.0 / rate if rate else 0.0
    next_send = t_start
    rr = 0
    total = 0
    closed: list[str] = []
    drain_deadline = 0.0
    while True:
        now = perf()
        if measuring:
            if not in_window and now >= t0:
                in_window = True
                t0 = now
                snap0 = sum(counts)
                gsnap0 = _group_sums(counts, groups, ngroups)
                cpu0 = cpu_seconds()
                srv0 = _proc_cpu(server_procs)
                ticks0 = cpu_ticks()
                for g in lat:
                    g.clear()
            elif in_window and now >= t1:
                t1 = now
                snap1 = sum(counts)
                gsnap1 = _group_sums(counts, groups, ngroups)
                cpu1 = cpu_seconds()
                srv1 = _proc_cpu(server_procs)
                ticks1 = cpu_ticks()
                measuring = False
                drain_deadline = now + drain_timeout
        if measuring:
            if rate is None:
                for s in range(S):
                    if pending[s]:
                        try:
                            k = ssocks[s].send(pending[s])
                            pending[s] = pending[s][k:]
                        except BlockingIOError:
                            pass
                room = win.room(total)
                if room * 4 >= win.limit:
                    t_ns = perf_ns()
                    per = max(1, room // S)
                    for s in range(S):
                        seq0 = sent[s]
                        data = b"".join([prefix + payload(s, seq0 + k, t_ns) + b"\r\n" for k in range(per)])
                        sent[s] += per
                        total += per
                        if pending[s]:
                            pending[s] += data
                            continue
                        try:
                            k = ssocks[s].send(data)
                        except BlockingIOError:
                            k = 0
                        if k < len(data):
                            pending[s] = data[k:]
                if batch_delay:
                    sleep(batch_delay)
                timeout = 0.001
            else:
                while now >= next_send:
                    next_send += interval
                    if win.room(total) <= 0:
                        continue  # window full: the paced rate is above capacity
                    s = rr % S
                    rr += 1
                    msg = pending[s] + prefix + payload(s, sent[s], perf_ns()) + b"\r\n"
                    sent[s] += 1
                    total += 1
                    try:
                        k = ssocks[s].send(msg)
                    except BlockingIOError:
                        k = 0
                    pending[s] = msg[k:]
                timeout = max(0.0, next_send - perf())
        else:
            if win.room(total, force=True) >= win.limit or now > drain_deadline:
                break  # every receiver has every message (or we give up and count the rest lost)
            timeout = 0.05
        for fd, ev in ep.poll(timeout):
            i = idx[fd]
            try:
                data = socks[i].recv(RECV)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                ep.unregister(fd)
                closed.append(conns[i].name)
                continue
            # count whole lines only, without copying the chunk: the line split across the
            # previous chunk is completed from a small head, the tail is carried
            c = carry[i]
            e = data.rfind(b"\n") + 1
            if not e:
                carry[i] = c + data
                continue
            if c:
                j = data.find(b"\n") + 1
                head = c + data[:j]
                counts[i] += head.count(b" PRIVMSG ") + data.count(b" PRIVMSG ", j, e)
            else:
                j = 0
                head = b""
                counts[i] += data.count(b" PRIVMSG ", 0, e)
            carry[i] = data[e:] if e < len(data) else b""
            if parse[i] and in_window and measuring:
                t_rx = perf_ns()
                g = lat[groups[i]]
                for m in _IRC_PAY.finditer(head):
                    g.append((t_rx - int(m.group(3))) / 1e6)
                for m in _IRC_PAY.finditer(data, j, e):
                    g.append((t_rx - int(m.group(3))) / 1e6)
            # (no PING check here: servers PING after 90-120 s of client silence, longer than a run;
            # the set-up and drain phases answer them)
        if closed and measuring:
            break
    ep.close()
    expected = [total - (sent[sender_of[i]] if i in sender_of else 0) for i in range(n)]
    lost = sum(max(0, expected[i] - counts[i]) for i in range(n))
    dup = sum(max(0, counts[i] - expected[i]) for i in range(n))
    if closed:
        raise BenchError(f"{len(closed)} connections closed by the server during the run (e.g. {closed[:3]})")
    if snap1 is None:
        raise BenchError("the measurement window never ended")
    el = t1 - t0
    return FloodResult(
        elapsed=el, deliveries=snap1 - snap0, deliveries_per_s=(snap1 - snap0) / el,
        group_deliveries_per_s=[(b - a) / el for a, b in zip(gsnap0, gsnap1)],
        messages_sent=total, lost=lost, duplicated=dup,
        gen_cpu=(cpu1 - cpu0) / el * 100.0, server_cpu=_cpu_pct(srv0, srv1, el),
        core_busy=core_usage(ticks0, ticks1),
        latency_ms=[{"p50": percentile(g, 50), "p99": percentile(g, 99), "n": len(g)} for g in lat],
    )


def cpu_ticks() -> dict[int, tuple[int, int]]:
    """Per-CPU (busy, total) jiffies from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                parts = line.split()
                v = [int(x) for x in parts[1:]]
                total = sum(v[:8])
                out[int(parts[0][3:])] = (total - v[3] - v[4], total)
    return out


def core_usage(a: dict, b: dict) -> dict[int, float]:
    """Busy % of each CPU between two cpu_ticks() samples."""
    return {c: round(100.0 * (b[c][0] - a[c][0]) / max(1, b[c][1] - a[c][1]), 1) for c in a if c in b}


def _group_sums(counts, groups, ngroups):
    out = [0] * ngroups
    for c, g in zip(counts, groups):
        out[g] += c
    return out


def _proc_cpu(procs):
    out = []
    for p in procs:
        try:
            t = p.cpu_times()
            out.append(t.user + t.system)
        except Exception:
            out.append(0.0)
    return out


def _cpu_pct(a, b, el):
    if not a or not b:
        return None
    return [round((y - x) / el * 100.0, 1) for x, y in zip(a, b)]


# ====================================================================== MQTT
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _str(s: bytes) -> bytes:
    return len(s).to_bytes(2, "big") + s


def mqtt_connect_packet(client_id: str, keepalive: int = 600, clean: bool = True) -> bytes:
    var = _str(b"MQTT") + bytes([4, 0x02 if clean else 0x00]) + keepalive.to_bytes(2, "big")
    body = var + _str(client_id.encode())
    return b"\x10" + _varint(len(body)) + body


def mqtt_subscribe_packet(pid: int, topic: str, qos: int) -> bytes:
    body = pid.to_bytes(2, "big") + _str(topic.encode()) + bytes([qos])
    return b"\x82" + _varint(len(body)) + body


def mqtt_publish(topic: bytes, data: bytes, qos: int, pid: int = 0) -> bytes:
    if qos:
        body = _str(topic) + pid.to_bytes(2, "big") + data
        return bytes([0x30 | (qos << 1)]) + _varint(len(body)) + body
    body = _str(topic) + data
    return b"\x30" + _varint(len(body)) + body


def mqtt_packets(buf: bytearray):
    """Split complete packets off buf: returns [(first byte, body)]; leaves the rest in buf."""
    pos = 0
    n = len(buf)
    out = []
    while pos + 2 <= n:
        first = buf[pos]
        k = pos + 1
        rl = 0
        shift = 0
        ok = False
        while k < n and k < pos + 5:
            b = buf[k]
            rl |= (b & 0x7F) << shift
            shift += 7
            k += 1
            if not b & 0x80:
                ok = True
                break
        if not ok or k + rl > n:
            break
        out.append((first, bytes(buf[k:k + rl])))
        pos = k + rl
    del buf[:pos]
    return out


def send_now(sock: socket.socket, data) -> None:
    """Send all of data; blocks only in the rare case the socket buffer is full."""
    try:
        k = sock.send(data)
    except BlockingIOError:
        k = 0
    if k < len(data):
        sock.setblocking(True)
        try:
            sock.sendall(data[k:])
        finally:
            sock.setblocking(False)


def mqtt_connect(host: str, port: int, ids: list[str], concurrency: int = 200, timeout: float = 60.0,
                 group: int = 0, clean: bool = True) -> list[Conn]:
    """Open MQTT 3.1.1 sessions (clean session unless `clean` is False: persistent), waiting for each CONNACK."""
    ep = select.epoll()
    todo = deque(enumerate(ids))
    active: dict[int, Conn] = {}
    done: list[Conn] = []
    deadline = time.monotonic() + timeout
    while todo or active:
        if time.monotonic() > deadline:
            raise BenchError(f"MQTT connect timed out ({len(active) + len(todo)} left)")
        while todo and len(active) < concurrency:
            k, cid = todo.popleft()
            s = _new_socket(None)
            c = Conn(s, cid, group, proto="mqtt")
            c.extra = k
            err = s.connect_ex((host, port))
            if err not in (0, errno.EINPROGRESS):
                raise BenchError(f"MQTT connect: {os.strerror(err)}")
            active[c.fd] = c
            ep.register(c.fd, EPOLLOUT | EPOLLIN)
        for fd, ev in ep.poll(0.05):
            c = active[fd]
            if c.state == 0:
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise BenchError(f"MQTT connect: {os.strerror(err)}")
                c.state = 1
                ep.modify(fd, EPOLLIN)
                c.sock.send(mqtt_connect_packet(c.name, clean=clean))
                continue
            try:
                data = c.sock.recv(RECV)
            except BlockingIOError:
                continue
            if not data:
                raise BenchError(f"MQTT {c.name}: closed by the broker")
            c.buf += data
            for first, body in mqtt_packets(c.buf):
                if first >> 4 == 2:
                    if body[1] != 0:
                        raise BenchError(f"MQTT {c.name}: CONNACK return code {body[1]}")
                    c.state = 2
            if c.state == 2:
                ep.unregister(fd)
                del active[fd]
                done.append(c)
    ep.close()
    done.sort(key=lambda c: c.extra)
    return done


def mqtt_subscribe(conns: list[Conn], topic_of, qos: int, timeout: float = 60.0) -> None:
    ep = select.epoll()
    active = {}
    for c in conns:
        c.buf.clear()
        c.send_all(mqtt_subscribe_packet(1, topic_of(c), qos))
        active[c.fd] = c
        ep.register(c.fd, EPOLLIN)
    deadline = time.monotonic() + timeout
    while active:
        if time.monotonic() > deadline:
            raise BenchError(f"SUBACK timed out ({len(active)} left)")
        for fd, ev in ep.poll(0.05):
            c = active[fd]
            data = c.sock.recv(RECV)
            if not data:
                raise BenchError(f"MQTT {c.name}: closed by the broker on SUBSCRIBE")
            c.buf += data
            for first, body in mqtt_packets(c.buf):
                if first >> 4 == 9:
                    if body[2] == 0x80:
                        raise BenchError(f"MQTT {c.name}: subscription refused")
                    ep.unregister(fd)
                    del active[fd]
                    break
    ep.close()


class _MqttRx:
    """Per-subscriber receive state with a fast path for a stream of equal-sized PUBLISH packets."""

    __slots__ = ("carry", "P", "first", "rl", "pid_off")

    def __init__(self):
        self.carry = b""
        self.P = 0
        self.first = 0
        self.rl = 0
        self.pid_off = 0


def mqtt_flood(subs: list[Conn], pubs: list[Conn], ref: Conn, topics: list[bytes], *, qos: int, window: int,
               warmup: float, duration: float, rate: float | None = None, lat_all: bool = False,
               expected_of=None, window_group: list[int] | None = None, server_procs=(),
               drain_timeout: float = 15.0, batch_delay: float = 0.002) -> FloodResult:
    """Publishers publish round robin over `topics`; every subscriber counts PUBLISH packets.

    The closed loop is as in irc_flood: window*len(pubs) messages in flight, counted at the
    slowest subscriber of window_group (default: all, i.e. subscribers that get every message).
    expected_of(sub_index, sent_per_topic) -> what that subscriber should get (loss check).
    QoS 1: subscribers PUBACK everything; publishers read their PUBACKs.
    """
    n = len(subs)
    S = len(pubs)
    conns = subs + pubs
    idx = {c.fd: i for i, c in enumerate(conns)}
    ref_i = idx[ref.fd]
    socks = [c.sock for c in conns]
    counts = [0] * n
    rx = [_MqttRx() for _ in range(n)]
    parse = [lat_all or i == ref_i for i in range(n)]
    lat: list[float] = []
    sent = [0] * S
    pubacks = [0] * S
    pending = [b""] * S
    pid = [0] * S
    pbuf = [bytearray() for _ in range(S)]
    T = len(topics)
    sent_topic = [0] * T
    tcursor = [s % T for s in range(S)]
    win = _Window(window * S, counts, list(window_group) if window_group is not None else list(range(n)), [], sent)
    ep = select.epoll()
    for c in conns:
        ep.register(c.fd, EPOLLIN)
    perf_ns = time.perf_counter_ns
    perf = time.perf_counter
    sleep = time.sleep
    t_start = perf()
    t0 = t_start + warmup
    t1 = t0 + duration
    snap0 = snap1 = None
    cpu0 = cpu1 = 0.0
    srv0 = srv1 = ticks0 = ticks1 = None
    in_window = False
    measuring = True
    interval = 1.0 / rate if rate else 0.0
    next_send = t_start
    rr = 0
    total = 0
    closed: list[str] = []
    drain_deadline = 0.0

    def make(s: int, k: int) -> bytes:
        t_ns = perf_ns()
        parts = []
        cur = tcursor[s]
        seq0 = sent[s]
        for j in range(k):
            if qos:
                p = pid[s] % 65535 + 1
                pid[s] = p
            else:
                p = 0
            parts.append(mqtt_publish(topics[cur], payload(s, seq0 + j, t_ns), qos, p))
            sent_topic[cur] += 1
            cur = (cur + S) % T if T > 1 else 0
        tcursor[s] = cur
        sent[s] += k
        return b"".join(parts)

    def expected_all():
        return all(counts[i] >= expected_of(i, sent_topic) for i in range(n))

    while True:
        now = perf()
        if measuring:
            if not in_window and now >= t0:
                in_window = True
                t0 = now
                snap0 = sum(counts)
                cpu0 = cpu_seconds()
                srv0 = _proc_cpu(server_procs)
                ticks0 = cpu_ticks()
                lat.clear()
            elif in_window and now >= t1:
                t1 = now
                snap1 = sum(counts)
                cpu1 = cpu_seconds()
                srv1 = _proc_cpu(server_procs)
                ticks1 = cpu_ticks()
                measuring = False
                drain_deadline = now + drain_timeout
        if measuring:
            if rate is None:
                for s in range(S):
                    if pending[s]:
                        try:
                            k = socks[n + s].send(pending[s])
                            pending[s] = pending[s][k:]
                        except BlockingIOError:
                            pass
                room = win.room(total)
                if room * 4 >= win.limit:
                    per = max(1, room // S)
                    for s in range(S):
                        data = make(s, per)
                        total += per
                        if pending[s]:
                            pending[s] += data
                            continue
                        try:
                            k = socks[n + s].send(data)
                        except BlockingIOError:
                            k = 0
                        if k < len(data):
                            pending[s] = data[k:]
                if batch_delay:
                    sleep(batch_delay)
                timeout = 0.001
            else:
                while now >= next_send:
                    next_send += interval
                    if win.room(total) <= 0:
                        continue
                    s = rr % S
                    rr += 1
                    msg = pending[s] + make(s, 1)
                    total += 1
                    try:
                        k = socks[n + s].send(msg)
                    except BlockingIOError:
                        k = 0
                    pending[s] = msg[k:]
                timeout = max(0.0, next_send - perf())
        else:
            if now > drain_deadline:
                break
            if win.room(total, force=True) >= win.limit and (expected_of is None or expected_all()):
                break
            timeout = 0.05
        for fd, ev in ep.poll(timeout):
            i = idx[fd]
            try:
                data = socks[i].recv(RECV)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                ep.unregister(fd)
                closed.append(conns[i].name)
                continue
            if i >= n:  # a publisher: PUBACKs (QoS 1)
                s = i - n
                pb = pbuf[s]
                pb += data
                for first, body in mqtt_packets(pb):
                    if first >> 4 == 4:
                        pubacks[s] += 1
                continue
            st = rx[i]
            if st.carry:
                data = st.carry + data
                st.carry = b""
            P = st.P
            if P and not parse[i]:
                k = len(data) // P
                if k:
                    end = k * P
                    if data[0:end:P].count(st.first) == k and data[1:end:P].count(st.rl) == k:
                        counts[i] += k
                        if qos:
                            o = st.pid_off
                            acks = bytearray(4 * k)
                            acks[0::4] = b"\x40" * k
                            acks[1::4] = b"\x02" * k
                            acks[2::4] = data[o:end:P]
                            acks[3::4] = data[o + 1:end:P]
                            send_now(socks[i], acks)
                        if end < len(data):
                            st.carry = data[end:]
                        continue
                else:
                    st.carry = data
                    continue
            # generic path
            buf = bytearray(data)
            acks = []
            t_rx = perf_ns()
            take_lat = parse[i] and in_window and measuring
            for first, body in mqtt_packets(buf):
                if first >> 4 != 3:
                    continue
                counts[i] += 1
                tl = int.from_bytes(body[0:2], "big")
                q = (first >> 1) & 3
                off = 2 + tl
                if q:
                    acks.append(b"\x40\x02" + body[off:off + 2])
                    off += 2
                if not P and len(body) < 128:
                    st.P = P = 2 + len(body)
                    st.first = first
                    st.rl = len(body)
                    st.pid_off = 4 + tl
                if take_lat:
                    try:
                        lat.append((t_rx - int(body[off + 12:off + 32])) / 1e6)
                    except ValueError:
                        pass
            if acks:
                send_now(socks[i], b"".join(acks))
            if buf:
                st.carry = bytes(buf)
        if closed and measuring:
            break
    ep.close()
    if closed:
        raise BenchError(f"{len(closed)} MQTT connections closed by the broker during the run (e.g. {closed[:3]})")
    if snap1 is None:
        raise BenchError("the measurement window never ended")
    lost = dup = 0
    if expected_of is not None:
        for i in range(n):
            e = expected_of(i, sent_topic)
            lost += max(0, e - counts[i])
            dup += max(0, counts[i] - e)
    el = t1 - t0
    return FloodResult(
        elapsed=el, deliveries=snap1 - snap0, deliveries_per_s=(snap1 - snap0) / el,
        messages_sent=total, lost=lost, duplicated=dup, pubacks=sum(pubacks),
        gen_cpu=(cpu1 - cpu0) / el * 100.0, server_cpu=_cpu_pct(srv0, srv1, el),
        core_busy=core_usage(ticks0, ticks1),
        latency_ms=[{"p50": percentile(lat, 50), "p99": percentile(lat, 99), "n": len(lat)}],
    )
