"""PubSub (XEP-0060) and PEP (XEP-0163) for the XMPP service, as ejabberd's mod_pubsub is built:
a core router (router.py: one table of operations, the access checks in one dispatch) over node
plugins (nodes.py: `flat`, `pep`; a module adds one as a `pubsub-node-plugin` item) and nodetree
plugins (nodetree.py: `tree`, `virtual`, `dag`); the `pubsub` store (store.py); the node
configuration form (forms.py); the service at `pubsub.<domain>` and PEP (service.py, pep.py);
one namespace with MQTT through the core's topic service (topics.py); the tree (federation.py)."""
