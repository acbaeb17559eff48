"""Entry point of a detached server: `python -m relay.runtime.daemon CONFIG READY_FD`.

It reports "ready" (or "error STATUS text") on READY_FD once listening, so
`relayctl start --detach` returns only when the server really is up.
"""

from __future__ import annotations

import os
import sys

from relay.core import config as config_mod
from relay.runtime.server import run


def main() -> int:
    path = sys.argv[1] if sys.argv[1] != "-" else None
    fd = int(sys.argv[2])

    def ready(msg: str) -> None:
        os.write(fd, msg.encode() + b"\n")
        os.close(fd)

    try:
        cfg = config_mod.load(path)
    except config_mod.ConfigError as e:
        ready("error 2 " + "\n".join(e.errors))
        return 2
    return run(cfg, path, foreground=False, ready=ready)


if __name__ == "__main__":
    sys.exit(main())
