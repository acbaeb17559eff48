"""Running the aioxmpp scenarios of aiox/ (in .venv-aioxmpp, made by tools/dev test) against a real server."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from support import ROOT, Server, free_port, server_config

PYTHON = os.environ.get("AIOXMPP_PYTHON", str(ROOT / ".venv-aioxmpp" / "bin" / "python"))
DRIVER = str(Path(__file__).parent / "aiox" / "driver.py")
RUN_LIMIT = 240      # one scenario process, several logins under load: a bound, not a speed check


def need_aioxmpp() -> None:
    """Skip (saying why) unless .venv-aioxmpp has aioxmpp."""
    if not os.path.exists(PYTHON):
        pytest.skip(f"no {PYTHON}: tools/dev test makes it (aioxmpp pins lxml 4, so it has its own venv)")
    r = subprocess.run([PYTHON, "-c", "import aioxmpp"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"aioxmpp does not import in {PYTHON}: {r.stderr.strip()[-300:]}")


def aioxmpp_server(directory, modules: dict, accounts=("alice", "bob", "carol", "erin")) -> Server:
    # The direct-TLS listener makes the certificate at start: the clients trust it before STARTTLS.
    ports = {"irc": free_port(), "c2s": free_port(), "tls": free_port()}
    cfg = server_config(listen=[{"proto": "irc", "host": "127.0.0.1", "port": ports["irc"]},
                                {"proto": "xmpp", "host": "127.0.0.1", "port": ports["c2s"]},
                                {"proto": "xmpp", "host": "127.0.0.1", "port": ports["tls"], "tls": True}],
                        modules=modules)
    srv = Server(directory, cfg).start()
    srv.ports = ports
    for name in accounts:
        srv.ctl("register", name, "secret")
    return srv


def run(srv: Server, scenario: str, **args) -> dict:
    """One scenario of the driver as a client process; its JSON result (an AssertionError with its
    traceback and the server's log if it failed)."""
    params = {"port": srv.ports["c2s"], "ca": str(srv.data_dir / "tls" / "cert.pem"), "args": args}
    try:
        r = subprocess.run([PYTHON, DRIVER, scenario], input=json.dumps(params), capture_output=True, text=True,
                           timeout=RUN_LIMIT)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"aioxmpp scenario {scenario} still running after {RUN_LIMIT}s: {e.stderr}") from None
    if r.returncode != 0:
        raise AssertionError(f"aioxmpp scenario {scenario} failed:\n{r.stderr[-4000:]}\n--- server log:\n"
                             f"{srv.log()[-3000:]}")
    return json.loads(r.stdout)
