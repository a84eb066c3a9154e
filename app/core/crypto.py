"""Keyed hashing, at-rest encryption and random secrets, all derived from the one master secret.

- ``keyed_hash``: HMAC-SHA256 for high-entropy or short-lived secrets (OTP codes, session and
  client tokens). A database dump alone does not allow guessing a 6-digit OTP offline.
- ``Sealer``: AES-256-GCM under a key-encryption key, for data that must be readable again
  (queued SMS bodies, private signing keys).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def derive_key(master: bytes, label: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label.encode()).derive(master)


class Keyring:
    """The keys one process derives once at start-up from the master secret."""

    def __init__(self, master: bytes) -> None:
        self._hash_key = derive_key(master, "eid/hmac/v1")
        self.sealer = Sealer(derive_key(master, "eid/kek/v1"))

    def keyed_hash(self, *parts: str) -> str:
        msg = "\x1f".join(parts).encode()
        return hmac.new(self._hash_key, msg, hashlib.sha256).hexdigest()

    def verify_keyed_hash(self, expected_hex: str, *parts: str) -> bool:
        return hmac.compare_digest(expected_hex, self.keyed_hash(*parts))


class Sealer:
    VERSION = b"\x01"

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, context: str = "") -> str:
        nonce = os.urandom(12)
        ct = self._aead.encrypt(nonce, plaintext, context.encode())
        return base64.urlsafe_b64encode(self.VERSION + nonce + ct).decode()

    def open(self, token: str, context: str = "") -> bytes:
        raw = base64.urlsafe_b64decode(token)
        if raw[:1] != self.VERSION:
            raise ValueError("unknown sealed-data version")
        return self._aead.decrypt(raw[1:13], raw[13:], context.encode())


def random_token(nbytes: int = 32) -> str:
    """A URL-safe random secret (256 bits by default)."""
    return secrets.token_urlsafe(nbytes)


def random_digits(n: int) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(n))


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
