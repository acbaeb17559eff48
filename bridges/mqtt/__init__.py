"""MQTT 3.1.1 / 5.0 broker, loaded as the module `mqtt` (module.py).

codec.py       sans-IO MQTT codec (bytes <-> packets)
session.py     the broker's data: Message (a topic item), Sub, Pending, Session
broker.py      sessions, delivery, wills, $SYS statistics, on the core's topic service
               (relay/core/topic_service.py: matching, retained items, federation, topic ACL)
client.py      one connection (TCP, or WebSocket via the http listener): packets in, broker calls out
channels.py    chan/NAME <-> #NAME, members, direct messages, the one-path delivery rule
store.py       persistence through the server storage (the `mqtt` store)
module.py      Options, setup: listener protocol `mqtt`, WebSocket route /mqtt, hooks, timers, commands
"""
