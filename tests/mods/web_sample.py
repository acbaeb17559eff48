"""A test module that uses every runtime registration of the bridge kit: an HTTP route, a WebSocket
route, a UDP datagram protocol, and an outbound dial."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from relay.core.admin import Reply
from relay.core.http_routes import BINARY_STREAM, HttpResponse


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dial_port: int | None = None      # dial 127.0.0.1:PORT at load and say hello
    greeting: str = "hello"


class Echo:
    """Writes back what it reads (over WebSocket: each read becomes one message)."""

    def __init__(self, transport, state):
        self.t, self.state = transport, state
        state["ws_open"] += 1

    def data_received(self, data: bytes, now: float) -> None:
        if data == b"close":
            self.t.close("asked to")
            return
        self.t.write(data)

    def connection_lost(self, reason: str, now: float) -> None:
        self.state["ws_open"] -= 1
        self.state["ws_lost"].append(reason)


class UdpEcho:
    def __init__(self, endpoint, state):
        self.ep, self.state = endpoint, state

    def datagram_received(self, data: bytes, addr, now: float) -> None:
        self.state["datagrams"] += 1
        self.ep.send_to(b"echo:" + data, addr)


class Hello:
    """The dialled side: greets, then echoes lines back upper-cased."""

    def __init__(self, transport, greeting: str, state):
        self.t, self.state = transport, state
        state["dial"] = "connected"
        transport.write(f"{greeting} from {transport.peer_host}\n".encode())

    def data_received(self, data: bytes, now: float) -> None:
        self.t.write(data.upper())

    def connection_lost(self, reason: str, now: float) -> None:
        self.state["dial"] = f"lost: {reason}"


def setup(module) -> None:
    opts: Options = module.options
    state = module.state
    state.update(ws_open=0, ws_lost=[], datagrams=0, dial=None)

    def hello(req, now):
        if req.path == "/hello/boom":
            raise RuntimeError("a route that fails")
        text = f"{opts.greeting} {req.method} {req.path} q={req.query} body={req.body.decode()}\n"
        return HttpResponse(200, [("X-Sample", "yes")], text.encode())

    module.http_route("/hello", hello)
    module.websocket_route("/echo", {"echo.test": BINARY_STREAM, None: BINARY_STREAM},
                           lambda t, listener, now: Echo(t, state))
    module.datagram_protocol("udp-echo", lambda ep, listener, now: UdpEcho(ep, state))
    if opts.dial_port:
        state["dial"] = "dialling"

        def failed(reason: str) -> None:
            state["dial"] = f"failed: {reason}"

        module.dial("127.0.0.1", opts.dial_port, lambda t, listener, now: Hello(t, opts.greeting, state),
                    on_fail=failed)
    module.command("web_sample status", lambda ctx: Reply(str(state), {k: v for k, v in state.items()}),
                   syntax="web_sample status", help="what the web_sample test module saw")
