"""SECRETS_KEY: the Fernet keys that encrypt stored secrets (docs/secrets.md, "Keys").

A comma-separated list: the first key encrypts, every key decrypts (MultiFernet), so a new
key goes first, `secrets rotate-key` re-encrypts, and the old key can then be dropped.

Each key has an id (`key_id`): the first 8 bytes, in hex, of SHA-256 over the key's 32 bytes.
It is stored with every value so a process can tell at start which keys the table needs
(webapp/secret_store/key_check.py). A one-way digest of 256 random bits, cut to 64: it neither
gives the key back nor helps guess it; it only says whether two keys are the same.
"""

import base64
import binascii
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import current_app

SECRET_KEYS = "secret_keys"  # noqa: S105 (the app.extensions entry, not a key)


class SecretsKeyError(RuntimeError):
    """SECRETS_KEY cannot be used; the message names the bad entry, never the key."""


class SecretUnreadable(Exception):
    """A stored value that no key of SECRETS_KEY decrypts."""


class SecretKeys:
    def __init__(self, raw: str):
        entries = [entry.strip() for entry in raw.split(",")]
        if not any(entries):
            raise SecretsKeyError("SECRETS_KEY is empty: give one or more Fernet keys, separated by commas")
        fernets, ids = [], []
        for number, entry in enumerate(entries, 1):
            if not entry:
                raise SecretsKeyError(f"SECRETS_KEY entry {number} of {len(entries)} is empty")
            try:
                fernets.append(Fernet(entry))
                ids.append(key_id(base64.urlsafe_b64decode(entry)))
            except (ValueError, binascii.Error, TypeError):
                raise SecretsKeyError(
                    f"SECRETS_KEY entry {number} of {len(entries)} is not a Fernet key "
                    "(32 url-safe base64-encoded bytes, as `Fernet.generate_key()` makes)"
                ) from None  # the cause could quote the key
        self._first = fernets[0]
        self._all = MultiFernet(fernets)
        self.ids = ids  # in SECRETS_KEY's order: ids[0] encrypts

    @property
    def first_id(self) -> str:
        return self.ids[0]

    def encrypt(self, value: str) -> str:
        return self._all.encrypt(value.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._all.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretUnreadable from None

    def current(self, token: str) -> bool:
        """Whether the first key already encrypts this token (rotation has nothing to do)."""
        try:
            self._first.decrypt(token.encode())
        except InvalidToken:
            return False
        return True

    def rotate(self, token: str) -> str:
        """The token re-encrypted with the first key; SecretUnreadable when no key opens it."""
        try:
            return self._all.rotate(token.encode()).decode()
        except InvalidToken:
            raise SecretUnreadable from None


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).digest()[:8].hex()


def secret_keys() -> SecretKeys:
    """The app's keys, parsed once by create_app."""
    return current_app.extensions[SECRET_KEYS]
