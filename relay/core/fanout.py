"""Local delivery of channel messages: one run of bytes shared by every local member.

The per-member cost of a channel message is what limits a Python server, so a
channel does not hand each message to each member. It keeps an open
`SharedRun` per capability profile, attached once to the outbox of every local
member with that profile; each message then appends one line per profile, and
every member's next flush sends the whole run (joined once, for all of them).
The per-member loop runs only when a run starts: when the sender changes (a
sender never gets its own line), when the local members change, or when a run
was sealed.

A run is sealed, and no longer appended to, when any of its members' outboxes
gets anything else (so every member's stream stays in order) and when any
member flushes it. Members that cannot share (other protocols, a transport
without `write_shared`, a labeled-response in progress, a backlogged socket)
are told one by one, as before.

Sessions that share runs provide: `shares_runs = True`; `profile` (equal
profiles get equal bytes; read when the fan-out is built, so a session whose
profile changes drops its channels' fan-outs); a static `render_shared(ev, profile) -> bytes | None`;
`run_ready() -> bool`; and a transport with `write_shared(run)`.
"""

from __future__ import annotations


class SharedRun:
    """Lines queued to several transports; their bytes are joined once, at the first flush."""

    __slots__ = ("parts", "sealed", "data")

    def __init__(self):
        self.parts: list[bytes] = []
        self.sealed = False
        self.data: bytes | None = None

    def take(self) -> bytes:
        d = self.data
        if d is None:
            self.sealed = True
            d = self.data = b"".join(self.parts)
            self.parts = []
        return d


class ChannelFanout:
    """Built from a channel's local members; dropped (`channel.fanout = None`) when they change."""

    __slots__ = ("shared", "others", "src", "runs", "direct", "via")

    def __init__(self, local):
        self.shared = []   # sessions that can share runs
        self.others = []   # everyone else: told one by one
        self.via = {}      # bridges that render for all their members (events_via): told once
        for u in local:
            s = u.session
            d = getattr(s, "events_via", None)
            if d is not None:
                self.via[d] = None
            elif getattr(s, "shares_runs", False) and hasattr(s.t, "write_shared"):
                # Its profile is read once: a session whose profile changes drops its channels' fan-outs.
                self.shared.append((s, (type(s), s.profile), s.t.write_shared))
            else:
                self.others.append(s)
        self.src = self
        self.runs: list[tuple[SharedRun, object, object]] = []  # (run, render, profile)
        self.direct: list = []

    def message(self, ev, src) -> None:
        """Deliver `ev` to every local member but the sender's session `src`."""
        runs = self.runs
        if self.src is not src or not runs and not self.direct:
            runs = self._start(src)
        else:
            for r in runs:
                if r[0].sealed:
                    runs = self._start(src)
                    break
        for run, render, profile in runs:
            data = render(ev, profile)
            if data:
                run.parts.append(data)
        for s in self.direct:
            s.deliver(ev)
        for d in self.via:
            d.channel_event(ev.target, ev)

    def _start(self, src) -> list:
        by_profile: dict = {}
        direct = []
        for s, key, write_shared in self.shared:
            if s is src:
                continue
            if not s.run_ready():
                direct.append(s)
                continue
            run = by_profile.get(key)
            if run is None:
                run = by_profile[key] = SharedRun()
            write_shared(run)
        for s in self.others:
            if s is not src:
                direct.append(s)
        self.src = src
        self.direct = direct
        self.runs = runs = [(run, key[0].render_shared, key[1]) for key, run in by_profile.items()]
        return runs
