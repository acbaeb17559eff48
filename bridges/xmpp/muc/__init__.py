"""MUC (XEP-0045) on the network's channels: see module.py."""
