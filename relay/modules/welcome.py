"""welcome: greets new members of configured channels with a NOTICE.

    modules:
      welcome:
        channels: {"#lobby": "Welcome to the lobby, {nick}!"}
        sender: welcome        # the nick the notice comes from

Works for members of every protocol: the greeting is a network message to
the member, which each protocol's session renders its own way.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from relay.core.model import NOTICE, User

COMMANDS = {"welcome stats": "how many members the welcome module has greeted"}  # syntax: help


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channels: dict[str, str] = Field(default_factory=dict)
    sender: str = "welcome"


def setup(module) -> None:
    opts: Options = module.options
    greetings = {module.core.net.fold(k): v for k, v in opts.channels.items()}
    me = module.core.config.server
    service = User("", opts.sender, "service", me.name, "Welcome service", me.id, "service", 0.0, 0.0)
    module.state.setdefault("greeted", 0)

    def on_join(user, channel):
        text = greetings.get(channel.key_name)
        if text is None or user.session is None:
            return None
        module.state["greeted"] += 1
        module.core.net.message(service, user, NOTICE, text.format(nick=user.nick, channel=channel.name),
                                module.core.now(), propagate=False)
        return None

    module.hook("member_joined", on_join)
    module.command("welcome stats", lambda ctx: _stats(module))


def _stats(module):
    from relay.core.admin import Reply
    return Reply(f"greeted {module.state['greeted']} members", dict(module.state))


def save(module):
    return dict(module.state)


def restore(module, state):
    module.state.update(state)
