"""Password hashes for operator blocks and link secrets kept in the config (made by `relayctl mkpasswd`).

scrypt (n=2^14, r=8, p=1), stored as `scrypt$<salt hex>$<hash hex>`; never a clear password.
"""

from __future__ import annotations

import hashlib
import hmac


def hash_password(password: str, salt: bytes) -> str:
    h = hashlib.scrypt(password.encode(), salt=salt, n=2 ** 14, r=8, p=1)
    return f"scrypt${salt.hex()}${h.hex()}"


def verify_password(stored: str, password: str) -> bool:
    try:
        kind, salt, _digest = stored.split("$")
        salt_bytes = bytes.fromhex(salt)
    except ValueError:
        return False
    if kind != "scrypt":
        return False
    return hmac.compare_digest(hash_password(password, salt_bytes), stored)
