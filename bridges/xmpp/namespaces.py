"""The XML namespaces of XMPP and the stream error conditions of RFC 6120 §4.9.3."""

STREAMS = "http://etherx.jabber.org/streams"
CLIENT = "jabber:client"
COMPONENT = "jabber:component:accept"
SERVER = "jabber:server"
FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"          # RFC 7395 (XMPP over WebSocket)
STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
STANZA_ERRORS = "urn:ietf:params:xml:ns:xmpp-stanzas"
TLS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"
SESSION = "urn:ietf:params:xml:ns:xmpp-session"
SM = "urn:xmpp:sm:3"                                      # XEP-0198
CSI = "urn:xmpp:csi:0"                                    # XEP-0352
ROSTERVER = "urn:xmpp:features:rosterver"                 # RFC 6121 §2.6
XML = "http://www.w3.org/XML/1998/namespace"

CONTENT_NAMESPACES = frozenset({CLIENT, COMPONENT, SERVER})

STREAM_ERROR_CONDITIONS = frozenset({
    "bad-format", "bad-namespace-prefix", "conflict", "connection-timeout", "host-gone",
    "host-unknown", "improper-addressing", "internal-server-error", "invalid-from",
    "invalid-namespace", "invalid-xml", "not-authorized", "not-well-formed", "policy-violation",
    "remote-connection-failed", "reset", "resource-constraint", "restricted-xml", "see-other-host",
    "system-shutdown", "undefined-condition", "unsupported-encoding", "unsupported-feature",
    "unsupported-stanza-type", "unsupported-version",
})
