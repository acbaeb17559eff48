"""RFC 3261 §17 transactions driven by a fake clock: retransmission schedules, timeouts, absorbing
retransmissions, ACK and CANCEL, matching, and where responses go (§18.2.2, RFC 3581)."""

from __future__ import annotations

import pytest

from bridges.sip.codec import RequestReceived, ResponseReceived, parse_datagram, serialise
from bridges.sip.headers import parse_via
from bridges.sip.message import make_response
from bridges.sip.transaction import (
    DeliverRequest, DeliverResponse, Destination, InviteClientTransaction, InviteServerTransaction, NonInviteClientTransaction,
    NonInviteServerTransaction, SendMessage, TimeoutOccurred, Timers, TransactionTable, TransactionTerminated,
    cancel_target_key, client_transaction_for, make_cancel, reply_destination, response_destination, server_key,
    server_transaction_for, stamp_via,
)

UDP = Destination("UDP", "192.0.2.9", 5060)
TCP = Destination("TCP", "192.0.2.9", 5060)


def request(method: str = "OPTIONS", branch: str = "z9hG4bKt1", transport: str = "UDP", cseq: int = 1,
            extra: str = ""):
    data = (f"{method} sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/{transport} 192.0.2.1:5060;branch={branch}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=f1\r\nTo: <sip:bob@example.com>\r\n"
            f"Call-ID: tx-1@192.0.2.1\r\nCSeq: {cseq} {method}\r\nRoute: <sip:proxy.example.com;lr>\r\n"
            f"{extra}Content-Length: 0\r\n\r\n").encode()
    event = parse_datagram(data)
    assert isinstance(event, RequestReceived)
    return event.request


def response_to(req, status: int, tag: str = "t1"):
    # Through bytes, as it would arrive.
    event = parse_datagram(serialise(make_response(req, status, to_tag=tag)))
    assert isinstance(event, ResponseReceived)
    return event.response


def sends(effects):
    return [e.message for e in effects if isinstance(e, SendMessage)]


def fire_all(tx, until: float):
    """Run the transaction's timers up to `until`; returns [(time, effects)] for each firing."""
    log = []
    while (deadline := tx.next_deadline()) is not None and deadline <= until:
        log.append((deadline, tx.timeout(deadline)))
    return log


# --- client, non-INVITE ---------------------------------------------------------------------------------

def test_timer_e_doubles_to_t2_and_timer_f_times_out():
    req = request()
    tx = NonInviteClientTransaction(req, UDP)
    assert sends(tx.start(100.0)) == [req]
    log = fire_all(tx, 1000)
    retransmits = [t - 100 for t, effects in log if sends(effects)]
    assert retransmits == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    last_time, last = log[-1]
    assert last_time == 132.0 and last == [TimeoutOccurred(tx.key, "F"), TransactionTerminated(tx.key)]
    assert tx.terminated and tx.next_deadline() is None


def test_timer_e_in_proceeding_retransmits_every_t2():
    req = request()
    tx = NonInviteClientTransaction(req, UDP)
    tx.start(0.0)
    effects = tx.receive(response_to(req, 100), 0.2)
    assert [type(e) for e in effects] == [DeliverResponse] and tx.state == "proceeding"
    log = fire_all(tx, 20)
    assert [t for t, e in log if sends(e)] == [0.5, 4.5, 8.5, 12.5, 16.5]


def test_non_invite_client_completed_absorbs_finals_then_timer_k():
    req = request()
    tx = NonInviteClientTransaction(req, UDP)
    tx.start(0.0)
    ok = response_to(req, 200)
    effects = tx.receive(ok, 1.0)
    assert [type(e) for e in effects] == [DeliverResponse] and tx.state == "completed"
    assert tx.receive(ok, 2.0) == []  # retransmitted 200 absorbed
    assert tx.next_deadline() == 1.0 + 5.0  # Timer K = T4
    assert tx.timeout(6.0) == [TransactionTerminated(tx.key)]


def test_no_retransmission_over_tcp_and_no_linger():
    req = request(transport="TCP")
    tx = NonInviteClientTransaction(req, TCP)
    tx.start(0.0)
    assert tx.next_deadline() == 32.0  # only Timer F
    effects = tx.receive(response_to(req, 200), 1.0)
    assert [type(e) for e in effects] == [DeliverResponse, TransactionTerminated] and tx.terminated


# --- client, INVITE ---------------------------------------------------------------------------------------

def test_timer_a_doubles_and_timer_b_times_out():
    req = request("INVITE")
    tx = InviteClientTransaction(req, UDP)
    tx.start(0.0)
    log = fire_all(tx, 100)
    assert [t for t, e in log if sends(e)] == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert log[-1] == (32.0, [TimeoutOccurred(tx.key, "B"), TransactionTerminated(tx.key)])


def test_invite_client_non_2xx_is_acked_inside_the_transaction():
    req = request("INVITE")
    tx = InviteClientTransaction(req, UDP)
    tx.start(0.0)
    tx.receive(response_to(req, 180), 0.1)
    assert tx.state == "proceeding" and tx.next_deadline() is None  # no retransmission, no Timer B
    busy = response_to(req, 486)
    effects = tx.receive(busy, 1.0)
    (ack,) = sends(effects)
    assert ack.method == "ACK" and ack.uri_text == req.uri_text and ack.cseq.number == 1
    assert ack.cseq.method == "ACK" and ack.to.tag == "t1" and ack.from_.tag == "f1"
    assert ack.headers.values("Via") == req.headers.values("Via")[:1]
    assert ack.headers.get("Route") == "<sip:proxy.example.com;lr>"
    assert DeliverResponse(tx.key, busy) in effects and tx.state == "completed"
    again = tx.receive(busy, 2.0)  # retransmitted 486: ACK again, not passed up
    assert [m.method for m in sends(again)] == ["ACK"] and not any(isinstance(e, DeliverResponse) for e in again)
    assert tx.next_deadline() == 33.0  # Timer D
    assert tx.timeout(33.0) == [TransactionTerminated(tx.key)]


def test_invite_client_2xx_goes_up_with_its_retransmissions_and_is_not_acked_here():
    req = request("INVITE")
    tx = InviteClientTransaction(req, UDP)
    tx.start(0.0)
    ok = response_to(req, 200)
    assert tx.receive(ok, 1.0) == [DeliverResponse(tx.key, ok)] and tx.state == "accepted"
    assert tx.receive(ok, 1.5) == [DeliverResponse(tx.key, ok)]  # the TU re-ACKs each
    assert tx.next_deadline() == 33.0  # Timer M
    assert tx.timeout(33.0) == [TransactionTerminated(tx.key)]


def test_invite_client_over_tcp_terminates_on_non_2xx():
    req = request("INVITE", transport="TCP")
    tx = InviteClientTransaction(req, TCP)
    tx.start(0.0)
    effects = tx.receive(response_to(req, 404), 1.0)
    assert [type(e) for e in effects] == [SendMessage, DeliverResponse, TransactionTerminated]


# --- server, non-INVITE -----------------------------------------------------------------------------------

def test_non_invite_server_absorbs_retransmissions_and_timer_j():
    req = request()
    tx = NonInviteServerTransaction(req, UDP)
    tx.start(0.0)
    assert tx.receive(req, 0.5) == []  # trying: nothing to repeat
    trying = make_response(req, 100)
    assert sends(tx.send(trying, 0.6)) == [trying] and tx.state == "proceeding"
    assert sends(tx.receive(req, 1.0)) == [trying]
    ok = make_response(req, 200)
    assert sends(tx.send(ok, 1.1)) == [ok] and tx.state == "completed"
    assert sends(tx.receive(req, 2.0)) == [ok] and sends(tx.receive(req, 20.0)) == [ok]
    assert tx.next_deadline() == 1.1 + 32.0  # Timer J = 64*T1
    assert tx.timeout(33.1) == [TransactionTerminated(tx.key)]
    with pytest.raises(ValueError):
        tx.send(ok, 40.0)


def test_non_invite_server_over_tcp_terminates_on_final():
    req = request(transport="TCP")
    tx = NonInviteServerTransaction(req, TCP)
    tx.start(0.0)
    effects = tx.send(make_response(req, 200), 0.1)
    assert [type(e) for e in effects] == [SendMessage, TransactionTerminated]


# --- server, INVITE ---------------------------------------------------------------------------------------

def test_invite_server_sends_trying_and_repeats_the_last_provisional():
    req = request("INVITE")
    tx = InviteServerTransaction(req, UDP)
    (trying,) = sends(tx.start(0.0))
    assert trying.status == 100 and trying.to.tag is None
    ringing = make_response(req, 180)
    tx.send(ringing, 0.1)
    assert sends(tx.receive(req, 0.5)) == [ringing]


def test_timer_g_retransmits_final_until_ack_then_timer_i_absorbs_acks():
    req = request("INVITE")
    tx = InviteServerTransaction(req, UDP)
    tx.start(0.0)
    busy = make_response(req, 486)
    tx.send(busy, 1.0)
    log = fire_all(tx, 9.0)
    assert [t - 1.0 for t, e in log if sends(e) == [busy]] == [0.5, 1.5, 3.5, 7.5]
    assert sends(tx.receive(req, 9.1)) == [busy]  # a retransmitted INVITE gets the final again
    ack = request("ACK", extra="")
    assert server_key(ack) == tx.key
    assert tx.receive(ack, 9.2) == [] and tx.state == "confirmed"
    assert tx.next_deadline() == pytest.approx(9.2 + 5.0)  # Timer I = T4, no more G
    assert tx.receive(ack, 10.0) == [] and tx.receive(req, 10.0) == []
    assert tx.timeout(14.2) == [TransactionTerminated(tx.key)]


def test_timer_g_caps_at_t2_and_timer_h_gives_up_without_ack():
    req = request("INVITE")
    tx = InviteServerTransaction(req, UDP)
    tx.start(0.0)
    tx.send(make_response(req, 500), 0.0)
    log = fire_all(tx, 100)
    times = [t for t, e in log if sends(e)]
    assert times[:6] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]
    assert log[-1] == (32.0, [TimeoutOccurred(tx.key, "H"), TransactionTerminated(tx.key)])


def test_invite_server_2xx_accepted_absorbs_invite_retransmissions():
    req = request("INVITE")
    tx = InviteServerTransaction(req, UDP)
    tx.start(0.0)
    ok = make_response(req, 200)
    assert sends(tx.send(ok, 1.0)) == [ok] and tx.state == "accepted"
    assert tx.receive(req, 1.5) == []  # the TU retransmits 2xx, not the transaction
    assert sends(tx.send(ok, 1.5)) == [ok]
    assert tx.timeout(33.0) == [TransactionTerminated(tx.key)]


def test_invite_server_over_tcp_confirmed_ends_at_once():
    req = request("INVITE", transport="TCP")
    tx = InviteServerTransaction(req, TCP)
    tx.start(0.0)
    tx.send(make_response(req, 404), 0.1)
    assert tx.next_deadline() == pytest.approx(0.1 + 32.0)  # Timer H only, no G
    assert tx.receive(request("ACK", transport="TCP"), 0.2) == [TransactionTerminated(tx.key)]


def test_custom_timers():
    req = request()
    tx = NonInviteClientTransaction(req, UDP, Timers(t1=0.1, t2=0.4, t4=1.0))
    tx.start(0.0)
    log = fire_all(tx, 100)
    assert [round(t, 3) for t, e in log if sends(e)][:5] == [0.1, 0.3, 0.7, 1.1, 1.5]
    assert log[-1][0] == pytest.approx(6.4)


# --- matching -------------------------------------------------------------------------------------------

def test_table_matches_requests_responses_and_cancel():
    table = TransactionTable()
    invite = request("INVITE", branch="z9hG4bKinv")
    server = server_transaction_for(invite, UDP)
    server.start(0.0)
    table.add(server)
    assert table.match_request(invite) is server
    assert table.match_request(request("INVITE", branch="z9hG4bKother")) is None
    cancel = request("CANCEL", branch="z9hG4bKinv")
    assert table.match_request(cancel) is None  # a CANCEL is a transaction of its own...
    assert table.match_cancel(cancel) is server  # ...that finds the INVITE it cancels
    assert cancel_target_key(cancel) == server.key
    # Same branch, other sent-by: another transaction (§17.2.3).
    other_host = parse_datagram(serialise(invite).replace(b"192.0.2.1:5060;branch", b"192.0.2.2:5060;branch"))
    assert table.match_request(other_host.request) is None

    out = request("OPTIONS", branch="z9hG4bKout")
    client = client_transaction_for(out, UDP)
    client.start(0.0)
    table.add(client)
    assert table.match_response(response_to(out, 200)) is client
    stray = response_to(request("OPTIONS", branch="z9hG4bKnobody"), 200)
    assert table.match_response(stray) is None
    # A response to the CANCEL does not match the INVITE's client transaction (method in the key).
    inv_out = request("INVITE", branch="z9hG4bKcall")
    inv_client = client_transaction_for(inv_out, UDP)
    inv_client.start(0.0)
    table.add(inv_client)
    assert table.match_response(response_to(make_cancel(inv_out), 200)) is None
    assert table.match_response(response_to(inv_out, 180)) is inv_client

    assert len(table) == 3 and table.next_deadline() == 0.5
    effects = table.timeout(1000.0)
    assert any(isinstance(e, TimeoutOccurred) for e in effects) and len(table) == 1  # server waits for the TU
    with pytest.raises(ValueError):
        client_transaction_for(request("ACK"), UDP)


def test_rfc2543_matching_without_magic_cookie():
    invite = request("INVITE", branch="oldstyle1")
    key = server_key(invite)
    assert key[0] == "2543"
    assert server_key(request("INVITE", branch="oldstyle1")) == key  # a retransmission
    assert server_key(request("INVITE", branch="oldstyle1", cseq=2)) != key
    ack = parse_datagram(serialise(request("ACK", branch="oldstyle1")).replace(
        b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com>;tag=t1")).request
    assert server_key(ack) == key  # the ACK carries our To tag, the INVITE had none
    assert cancel_target_key(request("CANCEL", branch="oldstyle1")) == key


def test_make_cancel():
    invite = request("INVITE")
    cancel = make_cancel(invite)
    assert (cancel.method, cancel.uri_text, cancel.cseq.number, cancel.cseq.method) == \
        ("CANCEL", invite.uri_text, 1, "CANCEL")
    assert cancel.headers.values("Via") == invite.headers.values("Via")[:1] and cancel.to.tag is None
    assert cancel_target_key(parse_datagram(serialise(cancel)).request) == server_key(invite)


# --- where responses go -----------------------------------------------------------------------------------

@pytest.mark.parametrize("via, source, expected", [
    ("SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bK1", ("192.0.2.1", 5062), ("UDP", "192.0.2.1", 5062)),
    # NAT: sent from elsewhere: to the source address, the Via port (no rport asked)
    ("SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK1", ("203.0.113.7", 40000), ("UDP", "203.0.113.7", 5062)),
    # rport (RFC 3581): the source address and port
    ("SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK1;rport", ("203.0.113.7", 40000), ("UDP", "203.0.113.7", 40000)),
    ("SIP/2.0/UDP host.example.com;branch=z9hG4bK1", ("192.0.2.3", 5999), ("UDP", "192.0.2.3", 5060)),
    ("SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1;maddr=239.255.255.1", ("192.0.2.3", 5999), ("UDP", "239.255.255.1", 5060)),
    # reliable: back over the connection it came on
    ("SIP/2.0/TCP 10.0.0.5:5062;branch=z9hG4bK1", ("203.0.113.7", 40001), ("TCP", "203.0.113.7", 40001)),
    ("SIP/2.0/TLS 10.0.0.5;branch=z9hG4bK1", ("203.0.113.7", 40002), ("TLS", "203.0.113.7", 40002)),
    # never to broadcast or unspecified addresses
    ("SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1;maddr=255.255.255.255", ("192.0.2.3", 5999), None),
    ("SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1", ("255.255.255.255", 5060), None),
])
def test_response_destination(via, source, expected):
    destination = response_destination(parse_via(via), source)
    assert (destination and (destination.transport, destination.host, destination.port)) == expected


def test_force_rport_answers_to_the_source_port():
    via = parse_via("SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK1")
    assert response_destination(via, ("203.0.113.7", 40000), force_rport=True).port == 40000
    assert response_destination(via, ("203.0.113.7", 40000)).port == 5062


def test_reply_destination_falls_back_to_the_source_when_the_via_is_the_fault():
    from bridges.sip.codec import MessageRejected

    bad = serialise(request()).replace(b"192.0.2.1:5060;branch=z9hG4bKt1", b"192.0.2.1;;,;,,")
    event = parse_datagram(bad)
    assert isinstance(event, MessageRejected) and event.response.status == 400
    assert reply_destination(event.response, ("198.51.100.2", 40000)) == Destination("UDP", "198.51.100.2", 40000)
    good = make_response(request(), 200)
    assert reply_destination(good, ("198.51.100.2", 40000)) == Destination("UDP", "198.51.100.2", 5060)


def test_stamp_via_adds_received_and_rport():
    assert str(stamp_via(parse_via("SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bK1"), ("192.0.2.1", 5062))) == \
        "SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bK1"
    assert str(stamp_via(parse_via("SIP/2.0/UDP h.example.com;branch=z9hG4bK1"), ("192.0.2.1", 5062))) == \
        "SIP/2.0/UDP h.example.com;branch=z9hG4bK1;received=192.0.2.1"
    assert str(stamp_via(parse_via("SIP/2.0/UDP 10.0.0.5:5062;rport;branch=z9hG4bK1"), ("203.0.113.7", 40000))) == \
        "SIP/2.0/UDP 10.0.0.5:5062;rport=40000;branch=z9hG4bK1;received=203.0.113.7"


def test_invite_server_accepted_passes_a_matching_ack_up():
    invite = request("INVITE", branch="oldstyle2")  # RFC 2543 peer: its 2xx ACK matches the INVITE's key
    tx = InviteServerTransaction(invite, UDP)
    tx.start(0.0)
    tx.send(make_response(invite, 200), 0.1)
    ack = request("ACK", branch="oldstyle2")
    assert server_key(ack) == tx.key
    assert tx.receive(ack, 0.2) == [DeliverRequest(tx.key, ack)]
