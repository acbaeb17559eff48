"""Registration timeout, PING on idle and ping timeout, with short timeouts.

The server checks every client from one sweep timer every 5 s (relay.core.server.IRC_SWEEP_INTERVAL),
so a timeout of 1 s fires at the next sweep: up to ~5 s for registration, ~10 s for a ping timeout.
All three clients run in one test so the module costs one such wait.
"""

from __future__ import annotations

import time

from ircsupport import SERVER_NAME, Closed, uniq


def test_registration_timeout_ping_and_ping_timeout(start_server):
    srv = start_server(irc={"registration_timeout": 1.0, "ping_interval": 1.0, "ping_timeout": 1.0})
    lazy = srv.raw()
    lazy.send("NICK " + uniq("lz"))  # never sends USER
    silent = srv.raw(uniq("si"))      # registered, never answers PING
    polite = srv.raw(uniq("po"))      # registered, answers PING

    deadline = time.monotonic() + 25
    lazy_err = silent_ping = silent_err = None
    polite_pings = 0
    while time.monotonic() < deadline and not (lazy_err and silent_err and polite_pings >= 2):
        for c in (lazy, silent, polite):
            if c.eof:
                continue
            try:
                c._fill(time.monotonic() + 0.1)
            except Closed:
                pass
            while c.pending:
                m = c.pending.pop(0)
                if c is lazy and m.command == "ERROR":
                    lazy_err = m
                elif c is silent and m.command == "PING":
                    silent_ping = m
                elif c is silent and m.command == "ERROR":
                    silent_err = m
                elif c is polite and m.command == "PING":
                    polite_pings += 1
                    polite.send(f"PONG :{m.params[-1]}")
                elif c is polite and m.command == "ERROR":
                    raise AssertionError(f"a client answering PINGs was disconnected: {m.raw}")

    assert lazy_err is not None and "Registration timed out" in lazy_err.params[0]
    assert lazy.closed()
    assert silent_ping is not None and silent_ping.params == [SERVER_NAME]
    assert silent_err is not None and "Ping timeout" in silent_err.params[0]
    assert silent.closed()
    assert polite_pings >= 2
    polite.send("PING :still")
    assert polite.expect("PONG").params[-1] == "still"
    srv.close_clients()
