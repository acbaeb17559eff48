"""The benchmark scenarios. Each runs once for one system and returns its metrics.

A scenario function takes (system, tmp dir, params) where system is "relaynet"
or "reference" (ngIRCd for IRC, Mosquitto for MQTT), starts fresh servers,
sets up clients, measures, stops everything, and returns a dict of numbers.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import select
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import loadgen as lg
from .servers import Mosquitto, Ngircd, Relaynet, free_port, relaynet_tree3

HOST = "127.0.0.1"
# Clients registering at once. ngIRCd listens with a backlog of 10 (hard-coded): more concurrent
# connects overflow its accept queue, SYNs are dropped and retried after 1 s, 3 s, ... Both
# servers reach their best handshake rate at about 10 (measured: ngIRCd 2.4k/s at 10, 1.1k/s at
# 50, 0.1k/s at 200; relaynet 0.77k/s at 10, 0.63k/s at 50 and 200).
HANDSHAKE_CONCURRENCY = 10
RUNNING: list = []  # servers started and not yet stopped (stopped on exit, whatever happens)


class Unavailable(Exception):
    """The scenario cannot run for this system (e.g. relaynet's MQTT module is missing)."""


@dataclass
class Params:
    quick: bool = False
    window: int = 256                # IRC: messages in flight per sender (closed loop)
    # MQTT: 128 per publisher, 512 in all: at QoS 1 Mosquitto queues at most max_queued_messages
    # (1000 by default) + max_inflight_messages (20) per subscriber and drops the rest.
    mqtt_window: int = 128
    warmup: float = 1.0
    duration: float = 5.0            # saturation window
    paced_duration: float = 4.0      # latency window at the paced rate
    paced_rate: float = 100.0        # messages/s in total at the paced rate
    fanout_clients: int = 100
    fanout_senders: int = 4
    tree_clients: int = 150
    netjoin_users: int = 1000
    netjoin_channels: int = 50
    netjoin_chans_per_user: int = 1
    mqtt_subs: int = 100
    mqtt_pubs: int = 4
    mqtt_topics: int = 1000
    mqtt_wildcards: int = 10
    idle_clients: int = 10_000
    hold_target: int = 50_000
    profile: bool = False
    notes: list = field(default_factory=list)

    @classmethod
    def quick_params(cls) -> "Params":
        return cls(quick=True, warmup=0.5, duration=1.5, paced_duration=1.5, netjoin_users=200,
                   netjoin_channels=10, mqtt_topics=200, idle_clients=1000, hold_target=0)


def _start(server):
    RUNNING.append(server)
    try:
        server.start()
    except Exception:
        stop(server)
        raise
    return server


def stop(*servers) -> None:
    for s in servers:
        try:
            s.stop()
        finally:
            if s in RUNNING:
                RUNNING.remove(s)


def stop_all() -> None:
    for s in list(RUNNING):
        try:
            stop(s)
        except Exception:
            pass


def _irc_single(system: str, tmp: Path, tag: str):
    if system == "relaynet":
        cfg = Relaynet.config_for(f"{tag}.relay.bench", "001", **bench_storage())
        return _start(Relaynet(tmp / f"relaynet-{tag}", cfg))
    return _start(Ngircd(tmp / f"ngircd-{tag}", f"{tag}.ngircd.bench"))


def _others(res: dict) -> dict:
    """CPU time others took on the two cores during the window (a shared machine), in %."""
    busy = res.get("core_busy") or {}
    srv = sum(res.get("server_cpu") or [0])
    return {"core0_others": round(max(0.0, busy.get(0, 0) - srv), 1),
            "core1_others": round(max(0.0, busy.get(1, 0) - res.get("gen_cpu", 0)), 1)}


def _cpu_per_delivery(res: dict) -> dict:
    """The servers' CPU time per delivery (µs), every server process summed: on a shared machine
    the throughput follows the others' load and the pipeline's batching, this much less."""
    d = res.get("deliveries_per_s")
    cpu = res.get("server_cpu")
    if not d or not cpu:
        return {}
    return {"server_us_per_delivery": sum(cpu) / 100.0 / d * 1e6}


def _median(xs):
    xs = sorted(x for x in xs if x is not None)
    return xs[len(xs) // 2] if xs else None


# ====================================================================== IRC fan-out
def irc_fanout(system: str, tmp: Path, p: Params) -> dict:
    srv = _irc_single(system, tmp, "fanout")
    conns = []
    try:
        conns, st = lg.irc_connect(HOST, srv.port(), [f"f{i:03d}" for i in range(p.fanout_clients)])
        if st["failures"]:
            raise lg.BenchError(f"registration failures: {st['errors']}")
        lg.irc_command_all(conns, lambda c: b"JOIN #bench\r\n", b" 366 ")
        lg.drain(conns)
        senders, ref = conns[:p.fanout_senders], conns[-1]
        sat = lg.irc_flood(conns, senders, ref, "#bench", window=p.window, warmup=p.warmup, duration=p.duration,
                           server_procs=srv.procs())
        lg.drain(conns)
        paced = lg.irc_flood(conns, senders, ref, "#bench", window=p.window, warmup=0.3,
                             duration=p.paced_duration, rate=p.paced_rate, lat_all=True, server_procs=srv.procs())
        return {
            "deliveries_per_s": sat["deliveries_per_s"],
            "messages_per_s": sat["deliveries_per_s"] / (p.fanout_clients - 1),
            "lost": sat["lost"] + paced["lost"], "duplicated": sat["duplicated"] + paced["duplicated"],
            "p50_ms": paced["latency_ms"][0]["p50"], "p99_ms": paced["latency_ms"][0]["p99"],
            "sat_ref_p50_ms": sat["latency_ms"][0]["p50"],
            "gen_cpu": sat["gen_cpu"], "server_cpu": sat["server_cpu"], "paced_gen_cpu": paced["gen_cpu"],
            "rss_mb": srv.rss() / 1e6, **_others(sat), **_cpu_per_delivery(sat),
        }
    finally:
        lg.close_all(conns)
        stop(srv)


# ====================================================================== IRC tree (chain of 3)
def _ng_chain(tmp: Path) -> list[Ngircd]:
    names = ["a.ngircd.bench", "b.ngircd.bench", "c.ngircd.bench"]
    ports = [free_port() for _ in names]
    a = Ngircd(tmp / "ng-a", names[0], ports[0], links=[{"name": names[1], "port": ports[1]}])
    b = Ngircd(tmp / "ng-b", names[1], ports[1], links=[{"name": names[0]}, {"name": names[2]}])
    c = Ngircd(tmp / "ng-c", names[2], ports[2], links=[{"name": names[1], "port": ports[1]}])
    return [a, b, c]


_probe_seq = 0


def _ng_wait_servers(port: int, n: int, timeout: float = 60.0) -> None:
    """Wait until the server on `port` counts n servers in its network (LUSERS)."""
    global _probe_seq
    _probe_seq += 1
    conns, _ = lg.irc_connect(HOST, port, [f"lu{_probe_seq:05d}"])
    if not conns:
        raise lg.BenchError("cannot connect to check the ngIRCd network")
    c = conns[0]
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            c.send_all(b"LUSERS\r\n")
            text = _read_until(c, b" 266 ", 10)
            for line in text.split(b"\n"):
                if b" 251 " in line and f" on {n} servers".encode() in line:
                    return
            time.sleep(0.25)
        raise lg.BenchError(f"ngIRCd network did not reach {n} servers in {timeout}s")
    finally:
        c.close()


def _read_until(c: lg.Conn, token: bytes, timeout: float) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while token not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise lg.BenchError(f"{c.name}: timed out waiting for {token!r}")
        r, _, _ = select.select([c.sock], [], [], left)
        if r:
            d = c.sock.recv(65536)
            if not d:
                raise lg.BenchError(f"{c.name}: closed")
            buf += d
    return buf


def _names_count(c: lg.Conn, channel: str) -> int:
    c.send_all(b"NAMES %s\r\n" % channel.encode())
    text = _read_until(c, b" 366 ", 10)
    n = 0
    for line in text.split(b"\r\n"):
        parts = line.split(b" ")
        if len(parts) > 1 and parts[1] == b"353":
            n += len(line.split(b" :", 1)[1].split())
    return n


def irc_tree(system: str, tmp: Path, p: Params) -> dict:
    if system == "relaynet":
        servers = relaynet_tree3(tmp / "relaynet-tree")
    else:
        servers = _ng_chain(tmp)
    conns = []
    try:
        for s in servers:
            _start(s)
        if system == "relaynet":
            deadline = time.monotonic() + 60
            while not all(len(s.call("dump-state")["servers"]) == 3 for s in servers):
                if time.monotonic() > deadline:
                    raise lg.BenchError("relaynet tree-3 did not link")
                time.sleep(0.1)
        else:
            _ng_wait_servers(servers[0].port(), 3)
            _ng_wait_servers(servers[2].port(), 3)
        per = p.tree_clients // 3
        for g, s in enumerate(servers):
            cs, st = lg.irc_connect(HOST, s.port(), [f"t{g}{i:03d}" for i in range(per)], group=g)
            if st["failures"]:
                raise lg.BenchError(f"registration failures on {s.name}: {st['errors']}")
            conns += cs
        lg.irc_command_all(conns, lambda c: b"JOIN #bench\r\n", b" 366 ", concurrency=20)
        # every server must see every member before we measure
        deadline = time.monotonic() + 30
        probes = [conns[0], conns[per], conns[2 * per]]
        while True:
            lg.drain(conns, quiet=0.2)
            counts = [_names_count(c, "#bench") for c in probes]
            if all(n == len(conns) for n in counts):
                break
            if time.monotonic() > deadline:
                raise lg.BenchError(f"channel membership did not converge: {counts} of {len(conns)}")
        lg.drain(conns)
        senders = conns[:p.fanout_senders]          # on a, the near end
        ref = conns[-1]                              # on c, the far end
        procs = [pr for s in servers for pr in s.procs()]
        sat = lg.irc_flood(conns, senders, ref, "#bench", window=p.window, warmup=p.warmup, duration=p.duration,
                           server_procs=procs)
        lg.drain(conns)
        paced = lg.irc_flood(conns, senders, ref, "#bench", window=p.window, warmup=0.3,
                             duration=p.paced_duration, rate=p.paced_rate, lat_all=True, server_procs=procs)
        lat = paced["latency_ms"]
        hop = None
        if lat[0]["p50"] is not None and lat[2]["p50"] is not None:
            hop = (lat[2]["p50"] - lat[0]["p50"]) / 2
        return {
            "far_deliveries_per_s": sat["group_deliveries_per_s"][2],
            "deliveries_per_s": sat["deliveries_per_s"],
            "lost": sat["lost"] + paced["lost"], "duplicated": sat["duplicated"] + paced["duplicated"],
            "p50_ms_by_server": [l["p50"] for l in lat], "p99_ms_by_server": [l["p99"] for l in lat],
            "hop_ms": hop,
            "gen_cpu": sat["gen_cpu"], "server_cpu": sat["server_cpu"], **_others(sat), **_cpu_per_delivery(sat),
        }
    finally:
        lg.close_all(conns)
        stop(*servers)


# ====================================================================== netjoin burst
def netjoin(system: str, tmp: Path, p: Params) -> dict:
    U, C, K = p.netjoin_users, p.netjoin_channels, p.netjoin_chans_per_user
    if system == "relaynet":
        la, lb = free_port(), free_port()
        secret = "bench-link-secret"
        ca = Relaynet.config_for("a.relay.bench", "001", listen=[{"proto": "link", "host": HOST, "port": la}],
                                 links=[{"name": "b.relay.bench", "id": "002", "host": HOST, "port": lb,
                                         "secret": secret, "autoconnect": False}])
        cb = Relaynet.config_for("b.relay.bench", "002", listen=[{"proto": "link", "host": HOST, "port": lb}],
                                 links=[{"name": "a.relay.bench", "id": "001", "host": HOST, "port": la,
                                         "secret": secret, "autoconnect": False}])
        sa, sb = Relaynet(tmp / "nj-a", ca), Relaynet(tmp / "nj-b", cb)
    else:
        pa, pb = free_port(), free_port()
        sa = Ngircd(tmp / "ng-nj-a", "a.ngircd.bench", pa,
                    links=[{"name": "b.ngircd.bench", "port": pb, "passive": True}])
        sb = Ngircd(tmp / "ng-nj-b", "b.ngircd.bench", pb, links=[{"name": "a.ngircd.bench"}])
    conns = []
    try:
        _start(sa)
        _start(sb)
        chans = [f"#c{j:02d}" for j in range(C)]
        sides = []
        for letter, srv in (("a", sa), ("b", sb)):
            users, st = lg.irc_connect(HOST, srv.port(), [f"{letter}{i:04d}" for i in range(U)])
            if st["failures"]:
                raise lg.BenchError(f"registration failures on {srv.name}: {st['errors']}")
            obs, _ = lg.irc_connect(HOST, srv.port(), [f"obs{letter}"])
            if not obs:
                raise lg.BenchError("observer failed to register")
            conns += users + obs

            def join_line(c, _users=users):
                i = int(c.name[1:])
                return b"JOIN " + ",".join(chans[(i + k * 7) % C] for k in range(K)).encode() + b"\r\n"
            lg.irc_command_all(users, join_line, b" 366 ", count=K, concurrency=50)
            lg.irc_command_all(obs, lambda c: b"JOIN " + ",".join(chans).encode() + b"\r\n", b" 366 ", count=C)
            sides.append((letter, srv, obs[0], users))
        lg.drain(conns, quiet=0.5)
        expected = U * K  # remote memberships each observer must see
        oa, ob = sides[0][2], sides[1][2]
        if system != "relaynet":
            lg.irc_command_all([oa], lambda c: b"OPER bench benchoper\r\n", b" 381 ")
            lg.drain(conns, quiet=0.3)
        seen = {oa.fd: set(), ob.fd: set()}
        remote = {oa.fd: b":b", ob.fd: b":a"}
        done_at = {}
        ep = select.epoll()
        by_fd = {c.fd: c for c in conns}
        for fd in by_fd:
            ep.register(fd, select.EPOLLIN)
        carry = {oa.fd: b"", ob.fd: b""}
        cpu0 = lg.cpu_seconds()
        procs = sa.procs() + sb.procs()
        srv0, ticks0 = lg._proc_cpu(procs), lg.cpu_ticks()
        t_link = time.perf_counter()
        if system == "relaynet":
            sa.call("link", "b.relay.bench")
        else:
            oa.send_all(b"CONNECT b.ngircd.bench\r\n")
        deadline = t_link + 120
        while len(done_at) < 2 and time.perf_counter() < deadline:
            for fd, ev in ep.poll(0.05):
                c = by_fd[fd]
                try:
                    data = c.sock.recv(lg.RECV)
                except BlockingIOError:
                    continue
                if not data:
                    raise lg.BenchError(f"{c.name} closed by the server during the netjoin")
                if fd in seen:
                    data = carry[fd] + data
                    e = data.rfind(b"\n") + 1
                    carry[fd] = data[e:]
                    pre = remote[fd]
                    s = seen[fd]
                    for line in data[:e].split(b"\n"):
                        if line.startswith(pre) and b" JOIN " in line:
                            nick = line[1:line.find(b"!")]
                            s.add((nick, line.rsplit(b" ", 1)[-1].lstrip(b":").strip()))
                    if len(s) >= expected and fd not in done_at:
                        done_at[fd] = time.perf_counter()
                elif b"PING" in data:
                    lg._irc_pong(c, data)
        ep.close()
        el = max(1e-9, time.perf_counter() - t_link)
        gen_cpu = (lg.cpu_seconds() - cpu0) / el * 100
        cpu = {"gen_cpu": gen_cpu, "server_cpu": lg._cpu_pct(srv0, lg._proc_cpu(procs), el),
               "core_busy": lg.core_usage(ticks0, lg.cpu_ticks())}
        if len(done_at) < 2:
            raise lg.BenchError(f"netjoin did not converge in 120 s: observers saw "
                                f"{len(seen[oa.fd])} and {len(seen[ob.fd])} of {expected} remote memberships")
        t_a, t_b = done_at[oa.fd] - t_link, done_at[ob.fd] - t_link
        # (CPU shares over a window this short are jiffy noise: only kept when it lasts a while)
        others = _others(cpu) if el >= 1.0 else {}
        return {"seconds": max(t_a, t_b), "a_sees_b_s": t_a, "b_sees_a_s": t_b, "gen_cpu": gen_cpu,
                "server_cpu": cpu["server_cpu"] if el >= 1.0 else None, "memberships_per_side": expected,
                **others}
    finally:
        lg.close_all(conns)
        stop(sa, sb)


# ====================================================================== MQTT
# `--storage postgresql`: the throw-away cluster relaynet's MQTT servers store in (a fresh database each).
PG_CLUSTER = None


def start_pg_cluster():
    """A throw-away PostgreSQL cluster, the one the tests use (tests/pgsupport.py)."""
    global PG_CLUSTER
    import importlib.util
    from .servers import ROOT
    spec = importlib.util.spec_from_file_location("relaynet_pgsupport", ROOT / "tests" / "pgsupport.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    # Not pinned: the database runs where the scheduler finds room (this process is on the generator's CPU).
    pinned = os.sched_getaffinity(0)
    os.sched_setaffinity(0, range(os.cpu_count() or 1))
    try:
        PG_CLUSTER = mod.PgCluster().start()
    finally:
        os.sched_setaffinity(0, pinned)
    return PG_CLUSTER


def stop_pg_cluster() -> None:
    global PG_CLUSTER
    if PG_CLUSTER is not None:
        PG_CLUSTER.stop()
        PG_CLUSTER = None


def bench_storage() -> dict:
    """relaynet's single servers (MQTT, IRC fan-out) store in PostgreSQL with `--storage postgresql` (a fresh
    database of the bench's cluster) or RELAYNET_BENCH_DSN (that database); else in SQLite, the default."""
    dsn = PG_CLUSTER.new_database() if PG_CLUSTER is not None else os.environ.get("RELAYNET_BENCH_DSN")
    return {"storage": {"backend": "postgresql", "dsn": dsn}} if dsn else {}


def _mqtt_server(system: str, tmp: Path, tag: str):
    if system == "relaynet":
        port = free_port()
        cfg = Relaynet.config_for(f"{tag}.relay.bench", "001", modules={"mqtt": {}},
                                  listen=[{"proto": "mqtt", "host": HOST, "port": port}], **bench_storage())
        srv = Relaynet(tmp / f"relaynet-{tag}", cfg)
        try:
            _start(srv)
        except RuntimeError as e:
            raise Unavailable(f"mqtt: relaynet module not available ({str(e).strip().splitlines()[-1][:160]})")
        try:
            _mqtt_roundtrip(srv.port("mqtt"))
        except Exception as e:
            stop(srv)
            raise Unavailable(f"mqtt: relaynet module not available (round trip failed: {e})")
        return srv
    return _start(Mosquitto(tmp / f"mosquitto-{tag}"))


def mqtt_available() -> tuple[bool, str]:
    """Does relaynet start with `modules: {mqtt: {}}` and an mqtt listener, and pass a round trip?"""
    import tempfile
    with tempfile.TemporaryDirectory(prefix="relaynet-bench-probe-") as d:
        try:
            srv = _mqtt_server("relaynet", Path(d), "probe")
        except Unavailable as e:
            return False, str(e)
        stop(srv)
    return True, "ok"


def _mqtt_roundtrip(port: int) -> None:
    sub = lg.mqtt_connect(HOST, port, ["probe-sub"])
    pub = lg.mqtt_connect(HOST, port, ["probe-pub"])
    try:
        lg.mqtt_subscribe(sub, lambda c: "bench/probe", 1)
        pub[0].send_all(lg.mqtt_publish(b"bench/probe", b"hello", 0))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            r, _, _ = select.select([sub[0].sock], [], [], 0.2)
            if r:
                d = sub[0].sock.recv(65536)
                if not d:
                    raise lg.BenchError("closed")
                sub[0].buf += d
                if any(f >> 4 == 3 for f, _ in lg.mqtt_packets(sub[0].buf)):
                    return
        raise lg.BenchError("no PUBLISH delivered within 5 s")
    finally:
        lg.close_all(sub + pub)


def _mqtt_fanout(system: str, tmp: Path, p: Params, qos: int, persistent: bool = False) -> dict:
    srv = _mqtt_server(system, tmp, f"mqtt-q{qos}" + ("-persistent" if persistent else ""))
    subs = pubs = []
    try:
        port = srv.port("mqtt")
        # Persistent sessions (clean session 0): every QoS 1 delivery is queued, sent and acknowledged
        # in the session's stored state, so each one costs database writes.
        subs = lg.mqtt_connect(HOST, port, [f"sub{i:04d}" for i in range(p.mqtt_subs)], clean=not persistent)
        pubs = lg.mqtt_connect(HOST, port, [f"pub{i}" for i in range(p.mqtt_pubs)])
        lg.mqtt_subscribe(subs, lambda c: "bench/fanout", qos)
        lg.drain(subs + pubs, quiet=0.3)
        topics = [b"bench/fanout"]
        exp = lambda i, st: sum(st)  # noqa: E731
        sat = lg.mqtt_flood(subs, pubs, subs[-1], topics, qos=qos, window=p.mqtt_window, warmup=p.warmup,
                            duration=p.duration, expected_of=exp, server_procs=srv.procs())
        lg.drain(subs + pubs, quiet=0.3)
        paced = lg.mqtt_flood(subs, pubs, subs[-1], topics, qos=qos, window=p.mqtt_window, warmup=0.3,
                              duration=p.paced_duration, rate=p.paced_rate, lat_all=True, expected_of=exp,
                              server_procs=srv.procs())
        return {"deliveries_per_s": sat["deliveries_per_s"], "lost": sat["lost"] + paced["lost"],
                "duplicated": sat["duplicated"] + paced["duplicated"],
                "p50_ms": paced["latency_ms"][0]["p50"], "p99_ms": paced["latency_ms"][0]["p99"],
                "gen_cpu": sat["gen_cpu"], "server_cpu": sat["server_cpu"], **_others(sat)}
    finally:
        lg.close_all(subs + pubs)
        stop(srv)


def mqtt_fanout_qos0(system, tmp, p):
    return _mqtt_fanout(system, tmp, p, 0)


def mqtt_fanout_qos1(system, tmp, p):
    return _mqtt_fanout(system, tmp, p, 1)


def mqtt_persistent(system, tmp, p):
    return _mqtt_fanout(system, tmp, p, 1, persistent=True)


def mqtt_topics(system: str, tmp: Path, p: Params) -> dict:
    srv = _mqtt_server(system, tmp, "mqtt-topics")
    subs = pubs = []
    try:
        port = srv.port("mqtt")
        T, Wc = p.mqtt_topics, p.mqtt_wildcards
        exact = lg.mqtt_connect(HOST, port, [f"ts{i:04d}" for i in range(T)])
        wild = lg.mqtt_connect(HOST, port, [f"tw{i:02d}" for i in range(Wc)])
        pubs = lg.mqtt_connect(HOST, port, [f"tp{i}" for i in range(p.mqtt_pubs)])
        subs = exact + wild
        lg.mqtt_subscribe(exact, lambda c: f"bench/t/{int(c.name[2:]):04d}", 0)
        lg.mqtt_subscribe(wild, lambda c: "bench/t/+" if int(c.name[2:]) % 2 else "bench/#", 0)
        lg.drain(subs + pubs, quiet=0.3)
        topics = [b"bench/t/%04d" % i for i in range(T)]

        def exp(i, st):
            return st[i] if i < T else sum(st)
        sat = lg.mqtt_flood(subs, pubs, wild[-1], topics, qos=0, window=p.mqtt_window, warmup=p.warmup,
                            duration=p.duration, expected_of=exp, window_group=range(T, T + Wc),
                            server_procs=srv.procs())
        return {"deliveries_per_s": sat["deliveries_per_s"],
                "messages_per_s": sat["deliveries_per_s"] / (1 + Wc), "lost": sat["lost"],
                "duplicated": sat["duplicated"], "sat_ref_p50_ms": sat["latency_ms"][0]["p50"],
                "gen_cpu": sat["gen_cpu"], "server_cpu": sat["server_cpu"], **_others(sat)}
    finally:
        lg.close_all(subs + pubs)
        stop(srv)


# ====================================================================== idle connections
def _alive(conns: list[lg.Conn]) -> int:
    """How many of conns are still open (a closed one reads EOF)."""
    ep = select.epoll()
    by_fd = {c.fd: c for c in conns if not c.closed}
    for fd in by_fd:
        ep.register(fd, select.EPOLLIN | select.EPOLLRDHUP)
    dead = 0
    for fd, ev in ep.poll(0.5):
        c = by_fd[fd]
        try:
            d = c.sock.recv(lg.RECV)
        except BlockingIOError:
            continue
        except OSError:
            d = b""
        if not d:
            dead += 1
            c.closed = True
        elif b"PING" in d:
            lg._irc_pong(c, d)
    ep.close()
    return sum(1 for c in conns if not c.closed)


def idle(system: str, tmp: Path, p: Params) -> dict:
    srv = _irc_single(system, tmp, "idle")
    warm = conns = []
    try:
        port = srv.port()
        warm, _ = lg.irc_connect(HOST, port, [f"w{i:04d}" for i in range(200)])
        lg.drain(warm, quiet=0.3)
        time.sleep(0.5)
        rss0 = srv.rss()
        cpu0 = lg.cpu_seconds()
        srv0, ticks0 = lg._proc_cpu(srv.procs()), lg.cpu_ticks()
        conns, st = lg.irc_connect(HOST, port, [f"i{i:05d}" for i in range(p.idle_clients)],
                                   concurrency=HANDSHAKE_CONCURRENCY, timeout=600)
        gen_cpu = (lg.cpu_seconds() - cpu0) / st["elapsed"] * 100
        cpu = {"gen_cpu": gen_cpu, "server_cpu": lg._cpu_pct(srv0, lg._proc_cpu(srv.procs()), st["elapsed"]),
               "core_busy": lg.core_usage(ticks0, lg.cpu_ticks())}
        lg.drain(conns, quiet=0.5, timeout=10)
        time.sleep(1.0)
        rss1 = srv.rss()
        alive = _alive(conns)
        n = st["registered"]
        return {"bytes_per_conn": (rss1 - rss0) / max(1, n), "handshakes_per_s": n / st["elapsed"],
                "registered": n, "alive": alive, "failures": st["failures"],
                "handshake_p50_ms": (lg.percentile(st["handshake_times"], 50) or 0) * 1000,
                "handshake_p99_ms": (lg.percentile(st["handshake_times"], 99) or 0) * 1000,
                "rss_mb": rss1 / 1e6, "gen_cpu": gen_cpu, "server_cpu": cpu["server_cpu"], **_others(cpu)}
    finally:
        lg.close_all(warm)
        lg.close_all(conns)
        stop(srv)


def _hold_worker(port: int, start: int, n: int, src_ips: list[str], concurrency: int, pipe) -> None:
    lg.raise_nofile()
    conns, st = lg.irc_connect(HOST, port, [f"h{start + i:06d}"[:9] for i in range(n)], concurrency=concurrency,
                               timeout=1200, src_ips=src_ips, per_conn_timeout=20, stop_after_failures=concurrency)
    pipe.send({"registered": st["registered"], "failures": st["failures"], "errors": st["errors"],
               "elapsed": st["elapsed"]})
    while True:
        cmd = pipe.recv()
        if cmd == "check":
            pipe.send({"alive": _alive(conns)})
        else:
            break
    lg.close_all(conns)
    pipe.send("closed")


def hold(system: str, tmp: Path, p: Params) -> dict:
    """The most registered IRC clients one server holds, trying up to p.hold_target."""
    srv = _irc_single(system, tmp, "hold")
    soft_srv = _nofile_of(srv.pids()[0])
    per_worker = 12_500
    workers = []
    try:
        port = srv.port()
        ctx = mp.get_context("fork")
        t0 = time.monotonic()
        k = 0
        while k * per_worker < p.hold_target:
            n = min(per_worker, p.hold_target - k * per_worker)
            a, b = ctx.Pipe()
            ips = [f"127.0.{10 + k}.{j}" for j in range(1, 5)]
            w = ctx.Process(target=_hold_worker, args=(port, k * per_worker, n, ips, 3, b), daemon=True)
            w.start()
            workers.append((w, a))
            k += 1
        reports = [a.recv() for _, a in workers]
        elapsed = time.monotonic() - t0
        time.sleep(2.0)
        for _, a in workers:
            a.send("check")
        alive = sum(a.recv()["alive"] for _, a in workers)
        server_alive = srv.alive()
        rss = srv.rss() if server_alive else 0
        errors: dict[str, int] = {}
        for r in reports:
            for e, c in r["errors"].items():
                errors[e] = errors.get(e, 0) + c
        return {"held": alive if server_alive else 0, "registered": sum(r["registered"] for r in reports),
                "attempted": p.hold_target, "server_alive": server_alive, "elapsed": elapsed,
                "server_nofile": soft_srv, "rss_mb": rss / 1e6, "errors": dict(sorted(errors.items())[:5])}
    finally:
        for w, a in workers:
            try:
                a.send("close")
                a.recv()
            except (EOFError, OSError):
                pass
            w.join(10)
            if w.is_alive():
                w.kill()
        stop(srv)


def _nofile_of(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                parts = line.split()
                return f"{parts[3]} soft / {parts[4]} hard"
    except OSError:
        pass
    return "?"
