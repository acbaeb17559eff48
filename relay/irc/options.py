"""The irc: section of the configuration: options of the IRC protocol only.

Limits every protocol shares (nicklen, channellen, ...) are in network:.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from relay.core.config import PositiveFloat, Strict


class OperBlock(Strict):
    name: Annotated[str, Field(min_length=1)]
    # scrypt hash made by `relayctl mkpasswd`; never a clear password.
    password: Annotated[str, Field(min_length=1)]
    # Access rule that must also allow the client (see access_rules:).
    rule: str = "oper"


class IrcOptions(Strict):
    maxtargets: Annotated[int, Field(ge=1, le=100)] = 4
    modes_per_line: Annotated[int, Field(ge=1, le=20)] = 4
    ping_interval: PositiveFloat = 90.0
    ping_timeout: PositiveFloat = 120.0
    registration_timeout: PositiveFloat = 30.0
    motd: str = "Welcome to relaynet."
    password: str | None = None   # server password clients must send with PASS (none by default)
    admin_name: str = "relaynet operator"
    admin_email: str = "root@localhost"
    admin_location: str = "Earth"
    opers: list[OperBlock] = []
