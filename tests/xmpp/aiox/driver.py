"""Runs one aioxmpp scenario against a relaynet server, inside .venv-aioxmpp (aioxmpp pins lxml 4, so it
cannot be imported next to relaynet): `python driver.py SCENARIO` reads {"port", "ca", "args"} as JSON
on stdin and prints what the scenario saw as one JSON object on stdout (a traceback and exit 1 if it
failed). The assertions are in tests/xmpp/test_aioxmpp_*.py."""

from __future__ import annotations

import asyncio
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import im  # noqa: E402,F401  (each module registers its scenarios)
import muc  # noqa: E402,F401
import pubsub  # noqa: E402,F401


def main() -> None:
    name = sys.argv[1]
    params = json.load(sys.stdin)
    env = common.Env(params["port"], params["ca"])
    result = asyncio.run(env.run(common.SCENARIOS[name], params.get("args", {})))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
