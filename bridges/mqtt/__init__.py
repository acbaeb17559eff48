"""MQTT 3.1.1 / 5.0 broker, loaded as the module `mqtt` (module.py).

codec.py       sans-IO MQTT codec (bytes <-> packets)
topics.py      topic names/filters, subscription trie, retained store
websocket.py   sans-IO WebSocket server codec (MQTT over WebSocket, subprotocol "mqtt")
acl.py         per-topic publish/subscribe rules (%u, %c, who)
broker.py      sessions, routing, retained messages, wills, $SYS statistics
client.py      one connection (TCP or WebSocket): packets in, broker calls out
channels.py    chan/NAME <-> #NAME, members, direct messages, the one-path delivery rule
federation.py  MQTT across server links (MQTT_SUB / MQTT_PUB frames)
store.py       persistence through the server storage (the `mqtt` store)
module.py      Options, setup: listener protocols `mqtt` and `mqtt-ws`, hooks, timers, commands
"""
