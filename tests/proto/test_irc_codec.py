import string

import pytest
from hypothesis import given, strategies as st

from relay.proto.irc import (
    CASEMAP, IrcConnection, LineRejected, Message, MessageReceived, ProtocolError, build,
    escape_tag_value, irc_lower, mask_match, normalize_mask, parse_line, unescape_tag_value,
    valid_channel, valid_nick,
)


def messages(events):
    assert all(isinstance(e, MessageReceived) for e in events), events
    return [e.message for e in events]


# -- parse_line -------------------------------------------------------------------

def test_parse_plain_command():
    assert parse_line("PING") == Message({}, None, "PING", [])


def test_parse_source_and_params():
    m = parse_line(":nick!user@host PRIVMSG #chan :hello there")
    assert m == Message({}, "nick!user@host", "PRIVMSG", ["#chan", "hello there"])


def test_parse_middle_params_only():
    assert parse_line("USER guest 0 *").params == ["guest", "0", "*"]


def test_parse_trailing_keeps_colons_and_spaces():
    assert parse_line("PRIVMSG #a ::) a  b ").params == ["#a", ":) a  b "]


def test_parse_empty_trailing():
    assert parse_line("TOPIC #a :").params == ["#a", ""]


def test_parse_trailing_right_after_command():
    assert parse_line("QUIT :bye now").params == ["bye now"]


def test_parse_colon_inside_middle_param_is_not_trailing():
    assert parse_line("MODE #a +b n!u@h:1").params == ["#a", "+b", "n!u@h:1"]


def test_parse_runs_of_spaces():
    m = parse_line("@a=1   :src   PRIVMSG   #a   b   :c d")
    assert m == Message({"a": "1"}, "src", "PRIVMSG", ["#a", "b", "c d"])


def test_parse_tolerates_leading_spaces():
    assert parse_line("  PING x") == Message({}, None, "PING", ["x"])
    assert parse_line("  :src PING x") == Message({}, "src", "PING", ["x"])


def test_parse_trailing_spaces_dropped_from_middle_params():
    assert parse_line("JOIN #a ").params == ["#a"]


def test_parse_command_uppercased():
    assert parse_line("privmsg #a :x").command == "PRIVMSG"


def test_parse_numeric():
    m = parse_line(":irc.example 001 nick :Welcome")
    assert (m.command, m.params) == ("001", ["nick", "Welcome"])


@pytest.mark.parametrize("cmd", ["ÉTÉ", "١٢٣", "PING\x7f"])
def test_parse_rejects_bad_command(cmd):
    with pytest.raises(ProtocolError):
        parse_line(f"{cmd} x")


def test_parse_tags():
    m = parse_line("@id=123;+draft/react=lol;flag;empty= :n PRIVMSG #a :hi")
    assert m.tags == {"id": "123", "+draft/react": "lol", "flag": "", "empty": ""}
    assert (m.source, m.command, m.params) == ("n", "PRIVMSG", ["#a", "hi"])


def test_parse_tags_unescaped():
    m = parse_line(r"@k=a\sb\:c\\d\re\nf PING")
    assert m.tags == {"k": "a b;c\\d\re\nf"}


def test_parse_tags_last_duplicate_wins_and_empty_items_skipped():
    assert parse_line("@a=1;;a=2; PING").tags == {"a": "2"}


def test_parse_tags_without_source():
    m = parse_line("@time=2024-01-01T00:00:00.000Z PING :x")
    assert m.tags == {"time": "2024-01-01T00:00:00.000Z"}
    assert m.source is None


@pytest.mark.parametrize("line", [
    "",
    ":only.a.source",
    ":src ",
    "@only=tags",
    "@only=tags ",
    "@a=1 :src",
    ": PING",
    "@=v PING",
    "   ",
    "PING x\ry",
    "PING\0",
    ":src :x",
])
def test_parse_malformed(line):
    with pytest.raises(ProtocolError) as exc:
        parse_line(line)
    assert exc.value.reason


# -- tag escaping ---------------------------------------------------------------------

def test_escape_tag_value():
    assert escape_tag_value("a b;c\\d\r\n") == r"a\sb\:c\\d\r\n"


@pytest.mark.parametrize("raw, value", [
    ("plain", "plain"),
    (r"\s\:\\\r\n", " ;\\\r\n"),
    (r"a\b", "ab"),     # unknown escape: the char itself
    ("end\\", "end"),   # trailing lone backslash is dropped
    (r"\\s", "\\s"),
])
def test_unescape_tag_value(raw, value):
    assert unescape_tag_value(raw) == value


@given(st.text())
def test_tag_escape_round_trip(v):
    escaped = escape_tag_value(v)
    assert not set(escaped) & set("; \r\n")
    assert unescape_tag_value(escaped) == v


# -- build ------------------------------------------------------------------------------

def test_build_plain():
    assert build(None, "PING") == b"PING\r\n"


def test_build_last_param_without_colon_when_not_needed():
    assert build("n!u@h", "JOIN", "#a") == b":n!u@h JOIN #a\r\n"
    assert build(None, "MODE", "#a", "+o", "nick") == b"MODE #a +o nick\r\n"


@pytest.mark.parametrize("last, wire", [
    ("hello there", b":hello there"),
    ("", b":"),
    (":)", b"::)"),
    ("a:b", b"a:b"),
])
def test_build_last_param_colon_rules(last, wire):
    assert build("srv", "PRIVMSG", "#a", last) == b":srv PRIVMSG #a " + wire + b"\r\n"


@pytest.mark.parametrize("middle", ["", "a b", ":a"])
def test_build_rejects_bad_middle_param(middle):
    with pytest.raises(ValueError):
        build(None, "PRIVMSG", middle, "text")


@pytest.mark.parametrize("kwargs", [
    dict(source=None, command="PRIVMSG", params=("#a", "evil\r\nQUIT")),
    dict(source=None, command="PRIVMSG", params=("#a", "nul\0")),
    dict(source="bad source", command="PING", params=()),
    dict(source="", command="PING", params=()),
    dict(source=None, command="", params=()),
    dict(source=None, command="PRIV MSG", params=()),
])
def test_build_rejects_unsendable(kwargs):
    with pytest.raises(ValueError):
        build(kwargs["source"], kwargs["command"], *kwargs["params"])


def test_build_tags():
    wire = build("n", "TAGMSG", "#a", tags={"+draft/react": "a b;c", "flag": "", "id": "1"})
    assert wire == b"@+draft/react=a\\sb\\:c;flag;id=1 :n TAGMSG #a\r\n"


@pytest.mark.parametrize("key", ["", "a=b", "a;b", "a b"])
def test_build_rejects_bad_tag_key(key):
    with pytest.raises(ValueError):
        build(None, "PING", "x", tags={key: "v"})


def test_build_encodes_utf8():
    assert build(None, "PRIVMSG", "#a", "héllo wörld") == "PRIVMSG #a :héllo wörld\r\n".encode()


def test_message_to_bytes():
    m = Message({"a": "b c"}, "srv", "NOTICE", ["*", "hi there"])
    assert m.to_bytes() == b"@a=b\\sc :srv NOTICE * :hi there\r\n"


# -- round trip property ----------------------------------------------------------------------

_line_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0\r\n"))
_word = _line_text.filter(lambda s: s and " " not in s)
_middle = _word.filter(lambda s: s[0] != ":")
_command = st.one_of(
    st.text(string.ascii_uppercase, min_size=1, max_size=12),
    st.text(string.digits, min_size=3, max_size=3),
)
_tag_key = st.text(string.ascii_letters + string.digits + "-+/.", min_size=1, max_size=20)
_tag_value = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"))


@st.composite
def _messages(draw):
    params = draw(st.lists(_middle, max_size=14))
    if draw(st.booleans()):
        params.append(draw(_line_text))
    return Message(
        tags=draw(st.dictionaries(_tag_key, _tag_value, max_size=5)),
        source=draw(st.none() | _word),
        command=draw(_command),
        params=params,
    )


@given(_messages())
def test_parse_build_round_trip(msg):
    wire = msg.to_bytes()
    assert wire.endswith(b"\r\n")
    assert parse_line(wire[:-2].decode()) == msg
    conn = IrcConnection(max_line=1 << 20, max_tags=1 << 20, max_buffer=1 << 21)
    assert messages(conn.receive_data(wire)) == [msg]


# -- IrcConnection framing ------------------------------------------------------------------------

def test_receive_crlf_and_lf():
    conn = IrcConnection()
    got = messages(conn.receive_data(b"PING a\r\nPING b\nPING c\r\n"))
    assert [m.params for m in got] == [["a"], ["b"], ["c"]]


def test_receive_split_across_calls():
    conn = IrcConnection()
    assert conn.receive_data(b"PRIVMSG #a :hel") == []
    assert conn.receive_data(b"lo wor") == []
    assert conn.receive_data(b"ld\r") == []
    got = messages(conn.receive_data(b"\nPING x\r\nNI"))
    assert [(m.command, m.params) for m in got] == [("PRIVMSG", ["#a", "hello world"]), ("PING", ["x"])]
    assert messages(conn.receive_data(b"CK bob\r\n")) == [Message({}, None, "NICK", ["bob"])]


def test_receive_byte_at_a_time():
    conn = IrcConnection()
    wire = b"@a=b :s PRIVMSG #a :x y\r\n"
    events = [e for i in range(len(wire)) for e in conn.receive_data(wire[i:i + 1])]
    assert messages(events) == [Message({"a": "b"}, "s", "PRIVMSG", ["#a", "x y"])]


def test_receive_utf8_split_inside_a_character():
    wire = "PRIVMSG #a :ü\r\n".encode()
    conn = IrcConnection()
    cut = wire.index(b"\xbc")
    assert conn.receive_data(wire[:cut]) == []
    assert messages(conn.receive_data(wire[cut:]))[0].params == ["#a", "ü"]


def test_empty_lines_ignored():
    conn = IrcConnection()
    assert conn.receive_data(b"\r\n\n\r\n") == []
    assert messages(conn.receive_data(b"\nPING x\r\n\r\n")) == [Message({}, None, "PING", ["x"])]


def test_empty_data():
    assert IrcConnection().receive_data(b"") == []


def test_line_at_limit_accepted_one_over_rejected():
    conn = IrcConnection()
    head = b"PRIVMSG #a :"
    ok = head + b"x" * (510 - len(head))
    assert len(ok + b"\r\n") == 512
    assert messages(conn.receive_data(ok + b"\r\n"))[0].params[1] == "x" * (510 - len(head))
    assert conn.receive_data(ok + b"xx\r\n") == [LineRejected("line too long", "INPUT_TOO_LONG", "PRIVMSG")]


def test_limit_with_lf_only_counts_as_crlf():
    conn = IrcConnection()
    line = b"PING :" + b"x" * (511 - 6)
    [event] = conn.receive_data(line + b"\n")
    assert event.code == "INPUT_TOO_LONG"


def test_too_long_in_one_chunk_next_line_fine():
    conn = IrcConnection()
    events = conn.receive_data(b"PRIVMSG #a :" + b"x" * 2000 + b"\r\nPING ok\r\n")
    assert len(events) == 2
    assert events[0] == LineRejected("line too long", "INPUT_TOO_LONG", "PRIVMSG")
    assert events[1] == MessageReceived(Message({}, None, "PING", ["ok"]))


def test_too_long_across_chunks_one_event_remainder_discarded():
    conn = IrcConnection()
    events = conn.receive_data(b"PRIVMSG #a :" + b"x" * 600)
    assert events == [LineRejected("line too long", "INPUT_TOO_LONG", "PRIVMSG")]
    assert conn.receive_data(b"y" * 5000) == []
    assert conn.receive_data(b"PING fake :not a command") == []
    assert conn.receive_data(b"zzz\r") == []
    assert messages(conn.receive_data(b"\nPING ok\r\n")) == [Message({}, None, "PING", ["ok"])]


def test_partial_line_at_limit_waits_for_crlf():
    conn = IrcConnection()
    line = b"PING :" + b"x" * (510 - 6)
    assert conn.receive_data(line + b"\r") == []
    assert messages(conn.receive_data(b"\n"))[0].command == "PING"


def test_too_long_partial_command_unknown():
    conn = IrcConnection()
    assert conn.receive_data(b"X" * 600) == [LineRejected("line too long", "INPUT_TOO_LONG", None)]


def test_tags_have_their_own_limit():
    conn = IrcConnection()
    tags = b"@k=" + b"v" * 8000 + b" "
    [event] = conn.receive_data(tags + b"PRIVMSG #a :" + b"x" * 400 + b"\r\n")
    assert isinstance(event, MessageReceived)
    assert len(event.message.tags["k"]) == 8000


def test_tag_section_exactly_at_limit():
    conn = IrcConnection()
    tags = b"@k=" + b"v" * (8191 - 4) + b" "
    assert len(tags) == 8191
    assert messages(conn.receive_data(tags + b"PING\r\n"))[0].command == "PING"
    [event] = conn.receive_data(b"@k=v" + tags[3:] + b"PING\r\n")
    assert event == LineRejected("tag data too long", "INPUT_TOO_LONG", "PING")


def test_too_long_tags_streamed_rejected_before_space():
    conn = IrcConnection()
    assert conn.receive_data(b"@k=" + b"v" * 8000) == []
    [event] = conn.receive_data(b"v" * 500)
    assert (event.code, event.command) == ("INPUT_TOO_LONG", None)
    assert conn.receive_data(b" PRIVMSG #a :x\r\nPING ok\r\n") == [MessageReceived(Message({}, None, "PING", ["ok"]))]


def test_body_after_tags_still_limited():
    conn = IrcConnection()
    [event] = conn.receive_data(b"@a=b PRIVMSG #a :" + b"x" * 600 + b"\r\n")
    assert event == LineRejected("line too long", "INPUT_TOO_LONG", "PRIVMSG")


def test_max_buffer_caps_pending_line():
    conn = IrcConnection(max_line=10_000, max_tags=10_000, max_buffer=1000)
    [event] = conn.receive_data(b"PRIVMSG #a :" + b"x" * 1000)
    assert event.code == "INPUT_TOO_LONG"
    assert conn._buf == b""  # nothing kept while discarding
    assert conn.receive_data(b"x" * 100_000) == []
    assert conn._buf == b""
    assert messages(conn.receive_data(b"\r\nPING ok\r\n"))[0].params == ["ok"]


def test_invalid_utf8():
    conn = IrcConnection()
    events = conn.receive_data(b"PRIVMSG #a :\xff\xfe\r\nPING ok\r\n")
    assert events[0] == LineRejected("invalid UTF-8", "INVALID_UTF8", "PRIVMSG")
    assert events[1] == MessageReceived(Message({}, None, "PING", ["ok"]))


def test_nul_byte():
    conn = IrcConnection()
    events = conn.receive_data(b":src privmsg #a :a\0b\r\nPING ok\r\n")
    assert events[0] == LineRejected("NUL byte in line", "NUL_BYTE", "PRIVMSG")
    assert isinstance(events[1], MessageReceived)


def test_rejected_command_found_after_leading_spaces():
    [event] = IrcConnection().receive_data(b"  @a=b :s notice x :\xff\r\n")
    assert (event.code, event.command) == ("INVALID_UTF8", "NOTICE")


def test_nul_byte_in_command_word():
    [event] = IrcConnection().receive_data(b"PI\0NG\r\n")
    assert (event.code, event.command) == ("NUL_BYTE", None)


@pytest.mark.parametrize("wire, command", [
    (b":only.a.source\r\n", None),
    (b"@only=tags\r\n", None),
    (b"@a=b :src\r\n", None),
    (b"PING a\rb\r\n", None),
])
def test_malformed_lines(wire, command):
    conn = IrcConnection()
    [event] = conn.receive_data(wire)
    assert isinstance(event, LineRejected)
    assert (event.code, event.command) == ("MALFORMED", command)
    assert messages(conn.receive_data(b"PING ok\r\n"))[0].params == ["ok"]


@pytest.mark.parametrize("wire, command", [(b"12 x\r\n", "12"), (b"nonexistent_command\r\n", "NONEXISTENT_COMMAND")])
def test_any_visible_word_is_a_command(wire, command):
    # The server answers such words with 421, as today's servers do; the codec does not drop them.
    [msg] = messages(IrcConnection().receive_data(wire))
    assert msg.command == command


def test_many_lines_one_chunk():
    conn = IrcConnection()
    wire = b"".join(build("s", "PRIVMSG", "#a", f"n {i}") for i in range(200))
    got = messages(conn.receive_data(wire))
    assert [m.params[1] for m in got] == [f"n {i}" for i in range(200)]


# -- IRC text rules ---------------------------------------------------------------------------------

def test_casemap():
    assert CASEMAP == "rfc1459"


def test_irc_lower():
    assert irc_lower("NiCK[]\\~") == "nick{}|^"
    assert irc_lower("ÀB") == "Àb"  # only ASCII folds under rfc1459


@pytest.mark.parametrize("nick", ["a", "Nick", "[away]", "`x", "_bot-2", "{a|b}^", "\\o", "x" * 9])
def test_valid_nick(nick):
    assert valid_nick(nick, 9)


@pytest.mark.parametrize("nick", ["", "1abc", "-abc", "a b", "a!b", "a@b", "a.b", "a:b", "a/b", "#chan", "é", "x" * 10])
def test_invalid_nick(nick):
    assert not valid_nick(nick, 9)


@pytest.mark.parametrize("name", ["#a", "#chan-nel", "#ümlaut", "#" + "c" * 49])
def test_valid_channel(name):
    assert valid_channel(name, 50)


@pytest.mark.parametrize("name", ["", "#", "chan", "&chan", "#a b", "#a,b", "#a\x07", "#a\0", "#a\r", "#a\n",
                                  "#a:b", "#" + "c" * 50])
def test_invalid_channel(name):
    assert not valid_channel(name, 50)


@pytest.mark.parametrize("mask, value", [
    ("*", ""),
    ("*!*@*", "nick!user@host"),
    ("nick!*@*", "NICK!u@h"),
    ("*!*@*.example.com", "a!b@irc.example.com"),
    ("n?ck!*@*", "nack!u@h"),
    ("[x]!*@*", "{X}!u@h"),        # rfc1459 folding
    ("a*b*c", "abc"),
    ("a*b*c", "a-b-b-c-c"),
    ("*a?c*", "xxabcxx"),
    ("x.y+z(1)", "X.Y+Z(1)"),     # regex metacharacters are literal
])
def test_mask_match(mask, value):
    assert mask_match(mask, value)


@pytest.mark.parametrize("mask, value", [
    ("nick!*@*", "nick2!u@h"),
    ("*!*@*.example.com", "a!b@example.com"),
    ("n?ck", "nck"),
    ("a*b*c", "acb"),
    ("a.b", "axb"),
    ("abc", "abcd"),
    ("*!*@host", "n!u@host\nx"),
])
def test_mask_no_match(mask, value):
    assert not mask_match(mask, value)


def test_mask_match_no_backtracking_blowup():
    mask = "*a" * 30 + "*b"
    assert not mask_match(mask, "a" * 500)


@pytest.mark.parametrize("mask, full", [
    ("nick", "nick!*@*"),
    ("nick!user", "nick!user@*"),
    ("user@host", "*!user@host"),
    ("nick!user@host", "nick!user@host"),
    ("nick!", "nick!*@*"),
    ("!user@host", "*!user@host"),
    ("nick!@host", "nick!*@host"),
    ("*.example.com", "*!*@*.example.com"),
    ("2001:db8::1", "*!*@2001:db8::1"),
    ("", "*!*@*"),
])
def test_normalize_mask(mask, full):
    assert normalize_mask(mask) == full
