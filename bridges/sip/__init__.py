"""SIP for relaynet (issue 18). Sans-IO and stdlib only: nothing here does I/O or reads a clock.

* uri: sip/sips/tel URIs (others kept as absolute URIs), escaping.
* headers: header names (compact forms), the ordered field list, name-addr, Contact, Via, CSeq.
* message: Request, Response, serialise, make_response.
* codec: parse_datagram (UDP), SipStreamConnection (TCP/TLS, CRLF keepalives), validate_request;
  its docstring says which faults the codec refuses and which validate_request answers.
* transaction: RFC 3261 §17 client/server transactions, matching, response_destination.
* digest: digest authentication against stored HA1s, stateless nonces.

Not yet here (later parts of issue 18): transports and their wiring into the runtime, registrar, proxy,
dialogs, and the mapping onto the network.
"""
