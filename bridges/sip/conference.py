"""Conference dialogs: an INVITE to sip:NAME@conference.<domain> joins #NAME; the dialog carries the
channel both ways (in-dialog MESSAGE), and ends by the member's BYE, by a KICK (the server sends BYE),
or when the dialog is found dead:

* RFC 4028 session timers: an INVITE (from a UAC with `Supported: timer`) with Session-Expires below
  `min_se` gets 422 with Min-SE; otherwise the 200 takes the interval (refresher uac, Require: timer)
  and a dialog not refreshed (re-INVITE or UPDATE) within it is ended with BYE.
* Without session timers, an in-dialog OPTIONS every `dialog_keepalive` seconds: no answer (timer F),
  408 or 481 ends the dialog (RFC 3261 §12.2.1.2: a 481 says the peer has no such dialog).

Per server: dialogs live only on the server whose conference URI the member called.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from bridges.sip.errors import SipParseError
from bridges.sip.headers import Headers
from bridges.sip.message import Request, Response, make_response
from relay.core.members import SpeakRefused, speak_refusal_text
from relay.core.network import JoinRefused


@dataclass(slots=True)
class ConferenceDialog:
    """A SIP member's dialog with a conference: where in-dialog requests go, and both sides' headers."""
    call_id: str
    aor: str
    channel: str
    target: str                   # the member's Contact
    flow: tuple[str, str, int]
    remote: str                   # its From (with its tag): our To
    remote_tag: str | None
    local: str                    # the To we answered (with our tag): our From
    cseq: int = 0
    session_expires: int | None = None   # RFC 4028 interval, when negotiated
    deadline: float = 0.0                # session timer: refresh due; else: next OPTIONS


def sender_aor(user) -> str:
    return (user.account or user.nick).lower()


def sdp_declining(offer: bytes, host: str) -> bytes:
    """An SDP answer that declines every stream of the offer (port 0, RFC 3264 §6): the channel has no
    media to mix."""
    lines = ["v=0", f"o=relaynet 0 0 IN IP4 {host}", "s=relaynet conference", f"c=IN IP4 {host}", "t=0 0"]
    for line in offer.decode("utf-8", "replace").splitlines():
        if line.startswith("m="):
            parts = line[2:].split()
            if len(parts) >= 4:
                lines.append(f"m={parts[0]} 0 {parts[2]} {parts[3]}")
    return ("\r\n".join(lines) + "\r\n").encode()


def _session_expires(req: Request) -> int | None:
    """The interval a UAC that supports timers asks for (-1: unreadable); None: no session timer (a UAC
    without `Supported: timer` cannot refresh for us, so its dialog gets the OPTIONS keepalive)."""
    value = req.headers.get("Session-Expires")
    supported = ",".join(req.headers.values("Supported")).lower()
    if value is None or "timer" not in [s.strip() for s in supported.split(",")]:
        return None
    try:
        return int(value.split(";", 1)[0].strip())
    except ValueError:
        return -1


class Conferences:
    def __init__(self, service):
        self.svc = service
        self.dialogs: dict[tuple[str, str], ConferenceDialog] = {}  # (Call-ID, our tag) -> dialog

    def dialog_key(self, req: Request, flow: tuple[str, str, int]) -> tuple[str, str] | None:
        """The conference dialog a request belongs to. A BYE without To tag counts when its Call-ID and
        From tag are the dialog's and it comes over the dialog's own flow: pyVoIP hangs up so (its BYE
        copies the INVITE's To and is addressed to its own Contact); nothing else in it is trusted."""
        if req.to.tag is not None:
            key = (req.call_id, req.to.tag)
            return key if key in self.dialogs else None
        if req.method != "BYE" or req.from_.tag is None:
            return None
        for key, d in self.dialogs.items():
            if d.call_id == req.call_id and d.flow == flow and d.remote_tag == req.from_.tag:
                return key
        return None

    # -------------------------------------------------------------- requests in
    def join(self, tx, req: Request, source, now: float) -> Response:
        """INVITE sip:NAME@conference.<domain>: join #NAME (the answer declines every media stream)"""
        opts = self.svc.opts
        se = _session_expires(req)
        if se is not None and (se < 0 or se < opts.min_se):
            return make_response(req, 422, "Session Interval Too Small", [("Min-SE", str(opts.min_se))])
        channel = "#" + req.uri.user
        try:
            self.svc.members.members.join(source, channel, now)
        except JoinRefused as e:
            return make_response(req, 403, f"Forbidden: cannot join {channel} ({e.code})")
        flow = tx.flow
        extra = [("Contact", f"<sip:{req.uri.user}@{flow.host}:{flow.port};transport={flow.transport.lower()}>")]
        if se is not None:
            extra += [("Session-Expires", f"{se};refresher=uac"), ("Require", "timer")]
        response = self._answer(req, flow.host, extra)
        try:
            target = str(req.contacts[0].uri) if req.contacts else str(req.from_.uri)
        except (SipParseError, IndexError):
            target = str(req.from_.uri)
        d = ConferenceDialog(req.call_id, sender_aor(source), channel, target, (flow.transport, *tx.source),
                             req.headers.get("From"), req.from_.tag, response.headers.get("To"),
                             session_expires=se)
        d.deadline = now + (se if se is not None else opts.dialog_keepalive)
        self.dialogs[(req.call_id, response.to.tag)] = d
        return response

    @staticmethod
    def _answer(req: Request, host: str, extra: list) -> Response:
        answer = sdp_declining(req.body, host) if req.content_type == "application/sdp" and req.body else b""
        if answer:
            extra = extra + [("Content-Type", "application/sdp")]
        return make_response(req, 200, extra=extra, body=answer)

    def in_dialog(self, key: tuple[str, str], req: Request, now: float) -> Response | None:
        """BYE leaves the channel; MESSAGE is a channel message; re-INVITE / UPDATE refresh the session
        timer; ACK is absorbed."""
        d = self.dialogs[key]
        user = self.svc.members.user_of(d.aor)
        if req.method == "ACK":
            return None
        if req.method == "BYE":
            del self.dialogs[key]
            if user is not None:
                self.svc.members.members.leave(user, d.channel, "Left the conference", now)
            return make_response(req, 200)
        if req.method == "MESSAGE" and user is not None:
            try:
                for line in req.body.decode("utf-8", "replace").replace("\r\n", "\n").split("\n"):
                    if line:
                        self.svc.members.members.speak(user, d.channel, line, now)
            except SpeakRefused as e:
                return make_response(req, 403, f"Forbidden: {speak_refusal_text(e)}")
            return make_response(req, 200)
        if req.method in ("INVITE", "UPDATE"):
            se = _session_expires(req)
            if se is not None and (se < 0 or se < self.svc.opts.min_se):
                return make_response(req, 422, "Session Interval Too Small", [("Min-SE", str(self.svc.opts.min_se))])
            if se is not None:
                d.session_expires = se
            interval = d.session_expires or self.svc.opts.dialog_keepalive
            d.deadline = now + interval
            extra = [("Session-Expires", f"{d.session_expires};refresher=uac")] if d.session_expires else []
            host = self.svc.flow_for(d.flow).host if self.svc.flow_for(d.flow) else "127.0.0.1"
            return self._answer(req, host, extra) if req.method == "INVITE" else make_response(req, 200, extra=extra)
        return make_response(req, 200)

    # -------------------------------------------------------------- requests out
    def _request(self, d: ConferenceDialog, method: str, now: float, body: bytes = b"",
                 on_result=None) -> bool:
        flow = self.svc.flow_for(d.flow)
        if flow is None:
            return False
        d.cseq += 1
        h = Headers()
        h.add("Via", f"SIP/2.0/{flow.transport} {flow.host}:{flow.port};branch=z9hG4bK{os.urandom(8).hex()};rport")
        h.add("Max-Forwards", "70")
        h.add("From", d.local)     # we are the To of the INVITE: our side of the dialog
        h.add("To", d.remote)
        h.add("Call-ID", d.call_id)
        h.add("CSeq", f"{d.cseq} {method}")
        if body:
            h.add("Content-Type", "text/plain;charset=utf-8")
        self.svc.send_request(Request(method, d.target, h, body), d.flow, now, on_result)
        return True

    def send_message(self, aor: str, ev) -> None:
        """A channel message to a member in a conference dialog: an in-dialog MESSAGE from the conference."""
        fold = self.svc.core.net.fold(ev.target.name)
        for d in list(self.dialogs.values()):
            if d.aor == aor and self.svc.core.net.fold(d.channel) == fold:
                self._request(d, "MESSAGE", ev.time, f"<{ev.source.nick}> {ev.text}".encode("utf-8"))

    def left(self, aor: str, channel_name: str, now: float) -> None:
        """The member left #channel by other means (KICK): the dialog ends with our BYE."""
        fold = self.svc.core.net.fold(channel_name)
        for key, d in list(self.dialogs.items()):
            if d.aor == aor and self.svc.core.net.fold(d.channel) == fold:
                del self.dialogs[key]
                self._request(d, "BYE", now)

    def end(self, key: tuple[str, str], reason: str, now: float, bye: bool = True) -> None:
        d = self.dialogs.pop(key, None)
        if d is None:
            return
        if bye:
            self._request(d, "BYE", now)
        user = self.svc.members.user_of(d.aor)
        if user is not None:
            self.svc.members.members.leave(user, d.channel, reason, now)

    def tick(self, now: float) -> None:
        for key, d in list(self.dialogs.items()):
            if now < d.deadline:
                continue
            if d.session_expires is not None:
                self.end(key, "Session expired", now)      # RFC 4028 §10: no refresh, BYE
                continue
            d.deadline = now + self.svc.opts.dialog_keepalive

            def answered(response, t, key=key):
                if response is None or response.status in (408, 481):
                    self.end(key, "Conference dialog lost", t, bye=response is not None)
            if not self._request(d, "OPTIONS", now, on_result=answered):
                self.end(key, "Conference dialog lost", now, bye=False)
