"""relaynet: a relay network for real-time messaging."""

__version__ = "0.1.0"
