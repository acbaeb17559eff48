"""SIP for relaynet: a sans-IO codec (uri, headers, message, codec), the RFC 3261 §17 transaction layer
(transaction) and digest authentication (digest). Stdlib only; nothing here does I/O or reads a clock."""
