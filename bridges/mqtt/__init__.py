"""MQTT 3.1.1 / 5.0 broker, loaded as the module `mqtt` (module.py).

codec.py       sans-IO MQTT codec (bytes <-> packets)
topics.py      topic names/filters, subscription trie, retained store
acl.py         per-topic publish/subscribe rules (%u, %c, who)
broker.py      sessions, routing, retained messages, wills, $SYS statistics
client.py      one connection (TCP, or WebSocket via the http listener): packets in, broker calls out
channels.py    chan/NAME <-> #NAME, members, direct messages, the one-path delivery rule
federation.py  MQTT across server links (MQTT_SUB / MQTT_PUB frames)
store.py       persistence through the server storage (the `mqtt` store)
module.py      Options, setup: listener protocol `mqtt`, WebSocket route /mqtt, hooks, timers, commands
"""
