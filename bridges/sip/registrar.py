"""The registrar (RFC 3261 §10.3): REGISTER, authenticated by digest against the account's stored HA1,
updates the bindings of the authenticated user's own address-of-record.

`register(request, user, flow_key, now) -> Response`: the caller has authenticated `user` already
(see SipService.authenticate); this checks the To AOR, Contact/Expires and Call-ID/CSeq ordering,
and answers 200 with every current binding, 423 with Min-Expires, 400 or 403.

RFC 5626 outbound: a Contact with +sip.instance and reg-id from a UA that supports outbound is bound to
the flow its REGISTER came over (a later REGISTER of the same instance and reg-id replaces it, whatever
its contact URI), answered with `Require: outbound`; when that flow dies its bindings go (service.flow_died).
"""

from __future__ import annotations

from bridges.sip.bindings import Binding, BindingStore
from bridges.sip.errors import SipParseError
from bridges.sip.message import Request, Response, make_response


class Registrar:
    def __init__(self, store: BindingStore, opts, is_local_uri, changed):
        self.store = store
        self.opts = opts
        self.is_local_uri = is_local_uri   # uri -> bool: one of our domains or addresses
        self.changed = changed             # (aor_key, now): bindings of that AOR changed

    def register(self, request: Request, user: str, flow_key: tuple[str, str, int], now: float) -> Response:
        """REGISTER sip:<domain>; To: <sip:user@domain>; Contact: <uri>[;expires=N] | *"""
        to_uri = request.to.uri
        if not self.is_local_uri(to_uri) or not self.is_local_uri(request.uri):
            return make_response(request, 403, "Forbidden: not a domain of this registrar")
        if (to_uri.user or "").lower() != user.lower():
            return make_response(request, 403, "Forbidden: you may only register your own address")
        aor = user.lower()
        try:
            contacts = request.contacts
            default = request.expires
        except SipParseError as e:
            return make_response(request, 400, f"Bad Request: {e.reason}")
        opts = self.opts
        if default is None:
            default = opts.default_expires
        call_id, cseq = request.call_id, request.cseq.number
        if contacts and contacts[0].is_star:
            if request.expires != 0:
                return make_response(request, 400, "Bad Request: Contact * needs Expires: 0")
            self.store.remove_all(aor)
            self.changed(aor, now)
            return make_response(request, 200)
        # RFC 5626 §6: reg-id counts only when the UA says it supports outbound, and then one Contact.
        outbound = "outbound" in [x.strip().lower() for x in ",".join(request.headers.values("Supported")).split(",")]
        if outbound and sum(1 for c in contacts if c.reg_id is not None) > 1:
            return make_response(request, 400, "Bad Request: more than one Contact with reg-id")
        changes = []
        for c in contacts:
            expires = c.expires if c.expires is not None else default
            expires = min(expires, opts.max_expires)
            if 0 < expires < opts.min_expires:
                return make_response(request, 423, "Interval Too Brief",
                                     [("Min-Expires", str(opts.min_expires))])
            changes.append((c, expires))
        current = {b.contact: b for b in self.store.get(aor, now)}
        for c, _ in changes:
            old = current.get(str(c.uri))
            if old is not None and old.call_id == call_id and cseq <= old.cseq:
                return make_response(request, 500, "Server Internal Error: CSeq out of order",
                                     [("Retry-After", "1")])
        added = sum(1 for c, e in changes if e > 0 and str(c.uri) not in current)
        if len(current) + added > opts.max_contacts:
            return make_response(request, 403, f"Forbidden: at most {opts.max_contacts} contacts")
        for c, expires in changes:
            binding = Binding(str(c.uri), now + expires if expires > 0 else 0.0, call_id, cseq, flow_key,
                              c.q, c.instance, c.reg_id if outbound and c.instance else None)
            self.store.update(aor, binding)
        if changes:
            self.changed(aor, now)
        extra = [("Contact", f"<{b.contact}>;expires={b.remaining(now)}") for b in self.store.get(aor, now)]
        if outbound and any(c.reg_id is not None and c.instance for c, e in changes if e > 0):
            extra.append(("Require", "outbound"))   # the flow the REGISTER came over is the binding's
        return make_response(request, 200, extra=extra)
