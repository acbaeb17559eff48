"""MQTT 3.1.1 / 5.0 support: a sans-IO codec (codec.py) and topic data structures (topics.py)."""
