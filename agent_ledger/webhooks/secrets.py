"""Webhook signing secrets: made, shown once, kept sealed.

A secret is ``whsec_`` plus the base64 of 32 random bytes (the Standard Webhooks form: the
signing key is the base64 decoding of the part after the prefix). The service must sign with
it for as long as the webhook lives, so it cannot keep only a hash, as it does for API keys:
it keeps it sealed with AES-256-GCM under a key derived (HKDF-SHA256) from LEDGER_KEY_PEPPER,
the server-side secret that already peppers API key hashes. A copy of the database alone does
not give the secrets away; the pepper does, so keep it out of the database's backups. Changing
the pepper makes existing secrets unreadable (their webhooks then fail to deliver and need
registering again), as it already invalidates every API key.
"""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["PREFIX", "new_secret", "seal", "signing_key", "unseal"]

PREFIX = "whsec_"
_SECRET_BYTES = 32
_NONCE_BYTES = 12
_INFO = b"agent-ledger webhook secrets v1"


def new_secret() -> str:
    return PREFIX + base64.b64encode(os.urandom(_SECRET_BYTES)).decode()


def signing_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret: the base64 decoding of the part after the prefix."""
    return base64.b64decode(secret.removeprefix(PREFIX))


def _key(pepper: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO)
    return hkdf.derive(pepper.encode())


def seal(secret: str, pepper: str, webhook_id: str) -> bytes:
    """nonce + AES-GCM ciphertext; the webhook's id is bound in as associated data, so a sealed
    secret copied onto another webhook's row does not open."""
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(_key(pepper)).encrypt(nonce, secret.encode(), webhook_id.encode())


def unseal(sealed: bytes, pepper: str, webhook_id: str) -> str:
    """The secret; raises cryptography's InvalidTag when the pepper or the row is not the one
    it was sealed with."""
    nonce, ciphertext = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
    return AESGCM(_key(pepper)).decrypt(nonce, ciphertext, webhook_id.encode()).decode()
