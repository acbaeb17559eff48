"""Room JIDs <-> channel names: `name@conference.<domain>` is `#name`.

The two sides fold names differently, so the mapping admits one spelling per channel and refuses
the others with a reason, never merging two channels silently:

- A JID localpart is lower-cased by PRECIS (Unicode); a channel name folds with the network's
  casemapping (rfc1459: ASCII letters and `[]\\~` -> `{}|^`). A room localpart must already be
  in the network's folded form: under rfc1459 `a[1]` is refused (say `a{1}`), because `#a[1]`
  and `#a{1}` are one channel and two JIDs for one room would be a silent merge.
- A character legal in a JID but not in a channel name (`,`, and whatever NUL/BEL/CR/LF PRECIS
  lets through) is refused. A channel whose name has a character a localpart cannot carry
  (`"&'/<>@`, space) or that PRECIS would fold differently (`#Ä` would be `ä`, which is `#ä`)
  has no room JID: it is not listed and cannot be joined from XMPP.
- CHANNELLEN bounds the channel name (the `#` counts).
"""

from __future__ import annotations

from relay.proto.irc import valid_channel

from ..jid import JidError, prep_localpart


class RoomNameError(ValueError):
    """A room localpart with no channel: the text says why and what to write instead."""


def channel_for(local: str, fold, chanlen: int) -> str:
    """The channel name of room localpart `local` (already PRECIS-prepared), or RoomNameError."""
    name = "#" + local
    if fold(name) != name:
        raise RoomNameError(f"room names fold as IRC channel names do: join {fold(name)[1:]!r} instead "
                            f"(it is the same channel)")
    if not valid_channel(name, chanlen):
        if len(name) > chanlen:
            raise RoomNameError(f"room name longer than the network's channel names ({chanlen - 1})")
        raise RoomNameError("room name has a character IRC channel names cannot have (space , : or a control)")
    return name


def local_for(channel: str, fold) -> str | None:
    """The room localpart of a channel, or None when XMPP cannot name it (see the module doc)."""
    if not channel.startswith("#") or len(channel) < 2:
        return None
    folded = fold(channel)[1:]
    try:
        prepared = prep_localpart(folded)
    except JidError:
        return None
    return prepared if prepared == folded else None
