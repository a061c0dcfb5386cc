"""Identity numbers at rest: AES-256-GCM to restore them, HMAC-SHA256 to find them.

A national ID or passport number is never stored in clear. The keyed hash makes equality
look-ups one indexed query without the key of the ciphertext, and without the HMAC key a
stolen index cannot be brute-forced over the ~10^10 plausible ID numbers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = "v1"  # prefix of stored ciphertexts, so that a key rotation can tell them apart


class InvalidKeyError(ValueError):
    """A configured key is not valid base64 of the right length."""


def decode_key(value: str, *, name: str, min_bytes: int, exact: bool = False) -> bytes:
    """Decode a base64 (standard or URL-safe) key and check its length.

    Raises
    ------
    InvalidKeyError
        The value is not base64 or has the wrong length; the message names the setting.
    """
    try:
        raw = base64.urlsafe_b64decode(value.strip().replace("+", "-").replace("/", "_")
                                       + "=" * (-len(value.strip()) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidKeyError(f"{name} is not base64: {exc}") from None
    if (exact and len(raw) != min_bytes) or len(raw) < min_bytes:
        want = f"exactly {min_bytes}" if exact else f"at least {min_bytes}"
        raise InvalidKeyError(f"{name} must decode to {want} bytes, got {len(raw)}")
    return raw


def new_key() -> str:
    """A fresh random 256-bit key, base64url (for ``secrets.toml``)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


class IdProtector:
    """Encrypts, decrypts and hashes identity numbers with keys from configuration.

    Parameters
    ----------
    encryption_key
        32 bytes for AES-256-GCM.
    hmac_key
        At least 32 bytes for HMAC-SHA256.
    """

    def __init__(self, encryption_key: bytes, hmac_key: bytes) -> None:
        if len(encryption_key) != 32:
            raise InvalidKeyError("the national ID encryption key must be 32 bytes (AES-256)")
        if len(hmac_key) < 32:
            raise InvalidKeyError("the national ID HMAC key must be at least 32 bytes")
        self._aead = AESGCM(encryption_key)
        self._hmac_key = hmac_key

    def lookup_hash(self, kind: str, value: str) -> str:
        """Keyed hash of a normalised value; ``kind`` separates ID types (same number, other
        document type, other hash)."""
        message = f"{kind}\x00{value}".encode()
        return hmac.new(self._hmac_key, message, hashlib.sha256).hexdigest()

    def encrypt(self, kind: str, value: str) -> str:
        nonce = os.urandom(12)  # 96-bit random nonce; 2^32 encryptions per key stay safe
        sealed = self._aead.encrypt(nonce, value.encode(), kind.encode())
        return f"{_VERSION}:" + base64.urlsafe_b64encode(nonce + sealed).decode()

    def decrypt(self, kind: str, token: str) -> str:
        """Restore a value; raises ``ValueError`` when the key or the ciphertext is wrong."""
        version, _, payload = token.partition(":")
        if version != _VERSION:
            raise ValueError(f"unknown ciphertext version {version!r}")
        raw = base64.urlsafe_b64decode(payload)
        try:
            return self._aead.decrypt(raw[:12], raw[12:], kind.encode()).decode()
        except InvalidTag:
            raise ValueError("the ciphertext does not open with the configured key") from None
