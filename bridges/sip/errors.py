"""The codec's one error type: every fault found in received bytes is a SipParseError."""

from __future__ import annotations


class SipParseError(ValueError):
    """A malformed message or header. `status` is the response a request with this fault gets
    (400 unless said otherwise); `reason` names the fault and becomes the reason phrase."""

    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.reason = reason
        self.status = status
