"""XMPP (RFC 6120/6121) service: sans-IO codec and negotiation so far; mapping and module come with issue 13.

namespaces.py   the namespace URIs and stream error conditions
stream.py       sans-IO XML stream codec on lxml (TCP streams and RFC 7395 WebSocket framing)
restricted.py   RFC 6120 §11.1 restricted XML refused on the raw bytes, before lxml parses them
stanza.py       serialisation once per recipient class, `to` spliced into pre-serialised bytes
jid.py          JID parsing and preparation (RFC 7622, PRECIS), XEP-0106 escaping, name fold
negotiation.py  c2s stream negotiation (STARTTLS, SASL, bind, session) and the XEP-0114 handshake
"""
