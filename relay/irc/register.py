"""In-band account registration (IRCv3 draft/account-registration), gated by the `register` access rule."""

from __future__ import annotations

from relay.core.accounts import AccountError
from relay.irc.client import IrcClient
from relay.irc.commands import command


@command("REGISTER", min_params=3, registered=False)
def register(c: IrcClient, msg, now):
    """REGISTER <account|*> <email|*> <password>"""
    name = c.nick if msg.params[0] == "*" else msg.params[0]
    if not name:
        c.reply("FAIL", "REGISTER", "NEED_NICK", "*", "Choose a nickname first")
        return
    if c.account is not None:
        c.reply("FAIL", "REGISTER", "ALREADY_AUTHENTICATED", name, "You are already logged in")
        return
    core = c.core
    if not core.acl.allowed("register", core.subject(None, c.t.peer_host)):
        c.reply("FAIL", "REGISTER", "TEMPORARILY_UNAVAILABLE", name, "Registration is not allowed from here")
        return
    try:
        acct = core.register_account(name, msg.params[2], now)
    except AccountError as e:
        code = "ACCOUNT_EXISTS" if "exists" in str(e) else "BAD_ACCOUNT_NAME" if "name" in str(e) \
            else "UNACCEPTABLE_PASSWORD"
        c.reply("FAIL", "REGISTER", code, name, str(e))
        return
    c.account = acct.name
    if c.user is not None:
        c.user.account = acct.name
        c.net.update_user(c.user, "account", now)
    c.reply("REGISTER", "SUCCESS", acct.name, f"Account {acct.name} registered")
    c.numeric("900", f"{c.nick or '*'}!{c.ident or '*'}@{c.host}", acct.name,
              f"You are now logged in as {acct.name}")
