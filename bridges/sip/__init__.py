"""SIP for relaynet (issue 18). The codec layer is sans-IO and stdlib only: nothing does I/O or reads a clock.

* uri: sip/sips/tel URIs (others kept as absolute URIs), escaping.
* headers: header names (compact forms), the ordered field list, name-addr, Contact, Via, CSeq.
* message: Request, Response, serialise, make_response.
* codec: parse_datagram (UDP), SipStreamConnection (TCP/TLS, CRLF keepalives), validate_request;
  its docstring says which faults the codec refuses and which validate_request answers.
* transaction: RFC 3261 §17 client/server transactions, matching, response_destination.
* digest: digest authentication against stored HA1s, stateless nonces.

The module layer on top (may import relay.core; see module.py): transport (UDP/TCP/WebSocket flows),
service (the method table and its dispatch), registrar, proxy, mapping (members, MESSAGE), bindings (the
`sip` store), federation (across the tree), conference (conference dialogs), presence, ratelimit.
"""
