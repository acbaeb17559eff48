"""Issue 16 with aioxmpp.muc as the real client (aiox/muc.py, one client process): join with history,
subject, nick change, private message, voice in a moderated room (asked for and given), moderation
(XEP-0425), kick, ban, members-only, password, the member list, leaving, mediated and direct invitations."""

from __future__ import annotations

import pytest
from aioxmpp_support import aioxmpp_server, need_aioxmpp, run

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    need_aioxmpp()
    s = aioxmpp_server(tmp_path_factory.mktemp("aioxmpp-muc") / "srv", {"xmpp": {}, "muc": {}})
    yield s
    s.stop()


def test_a_room_from_creation_to_invitations(srv):
    got = run(srv, "room_life", name="club")
    room = "club@conference.localhost"
    assert got == {
        "creator": ["moderator", "owner"],
        "history": ["history 2", "history 3"], "history_delayed": True,
        "subject": ["Tea time", "Tea time", "alice"],
        "nick": ["bob", "bobby", "bobby"],
        "private": [f"{room}/alice", f"{room}/bobby"],          # occupant JIDs both ways (XEP-0045 §7.5)
        "voice_request": ["bobby", "participant"], "voice": "participant",
        "retracted_from": room,
        "kick": ["KICKED", [110, 307]],
        "ban": ["BANNED", [110, 301]], "banned_join": "forbidden",
        "stranger_join": "registration-required", "member_without_password": "not-authorized",
        "member_join": "member", "members": ["erin@localhost"], "left": ["erin", 1],
        "invites": [[room, "DIRECT", "alice@localhost"], [room, "MEDIATED", "alice@localhost"]],
        "mediated_password": "sesame",
    }
    assert srv.status()["pid"]
