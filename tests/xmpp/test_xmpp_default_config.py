"""configs/default.yaml serves XMPP: `relayctl register alice secret` is enough to log in as
alice@localhost, with STARTTLS on the c2s port and direct TLS on the other (free ports here)."""

from __future__ import annotations

import asyncio

import pytest
import yaml
from xmpp_live import make_client, offline, online

from support import ROOT, Server, free_port

slixmpp = pytest.importorskip("slixmpp")


def test_the_default_config_serves_xmpp_on_starttls_and_direct_tls(tmp_path):
    cfg = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    ports = {}
    for l in cfg["listen"]:
        ports[l["proto"], l["tls"]] = l["port"] = free_port()
    assert ("xmpp", False) in ports and ("xmpp", True) in ports and "xmpp" in cfg["modules"]
    srv = Server(tmp_path / "default", cfg).start()
    try:
        srv.ctl("register", "alice", "secret")
        srv.ports = {"c2s": ports["xmpp", False], "tls": ports["xmpp", True]}

        async def main():
            a = await online(make_client(slixmpp, "alice@localhost/one", "secret", srv), srv)
            b = await online(make_client(slixmpp, "alice@localhost/two", "secret", srv, direct_tls=True), srv,
                             direct_tls=True)
            await offline(a, b)
        asyncio.run(main())
    finally:
        srv.stop()
