"""A module that registers one of everything, for the module manager's tests."""

from pydantic import BaseModel, ConfigDict

from relay.core.admin import Reply
from relay.irc.table import IrcCommand


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    greeting: str = "hi"
    fail_setup: bool = False


def setup(module):
    if module.options.fail_setup:
        module.hook("member_joined", lambda u, c: None)  # registered, then setup fails: must be undone
        raise RuntimeError("setup failed on purpose")
    module.state.setdefault("ticks", 0)
    module.state.setdefault("joins", 0)
    module.hook("member_joined", lambda u, c: module.state.__setitem__("joins", module.state["joins"] + 1))
    module.every(1.0, lambda now: module.state.__setitem__("ticks", module.state["ticks"] + 1))
    module.command("sample hello", lambda ctx, *a: Reply(module.options.greeting + " " + " ".join(a)),
                   syntax="sample hello [WORDS]", help="say hello", max_args=None)
    module.add_item("irc-command", IrcCommand("SAMPLE", lambda client, msg, now: client.numeric("NOTICE", module.options.greeting)))
    module.protocol("sample", lambda transport, listener, now: EchoProtocol(transport))


class EchoProtocol:
    def __init__(self, transport):
        self.t = transport

    def data_received(self, data, now):
        self.t.write(data.upper())

    def connection_lost(self, reason, now):
        pass


def save(module):
    return dict(module.state)


def restore(module, state):
    module.state.update(state)
