"""Case mappings: how names fold for comparison, chosen once per network (network.casemapping).

rfc1459 is IRC's traditional mapping ([]\\~ are the upper case of {}|^); ascii
folds A-Z only. Both leave other characters alone: names from XMPP and SIP are
mapped onto nicks and channels of these characters before they are folded
(bridges refuse names that cannot be mapped, rather than merging two of them).
`unicode_fold` (NFKC then casefold) is the documented fold for comparing the
Unicode names those protocols use among themselves (JID localparts, SIP users).
"""

from __future__ import annotations

import string
import unicodedata
from typing import Callable

_RFC1459 = str.maketrans(string.ascii_uppercase + "[]\\~", string.ascii_lowercase + "{}|^")
_ASCII = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def rfc1459_fold(s: str) -> str:
    return s.translate(_RFC1459)


def ascii_fold(s: str) -> str:
    return s.translate(_ASCII)


def unicode_fold(s: str) -> str:
    return unicodedata.normalize("NFKC", s).casefold()


CASEMAPPINGS: dict[str, Callable[[str], str]] = {"rfc1459": rfc1459_fold, "ascii": ascii_fold}


def fold_for(name: str) -> Callable[[str], str]:
    try:
        return CASEMAPPINGS[name]
    except KeyError:
        raise ValueError(f"unknown casemapping {name!r} (known: {', '.join(CASEMAPPINGS)})") from None
