"""The receivers' signing secrets. A secret is shown once, when the subscription is made, and
must stay usable by the worker to sign (HMAC needs the secret itself, not a hash of it), so
it is stored — sealed with a key from the environment:

- WEBHOOK_SECRET_KEY, or when it is unset a key derived from SESSION_SECRET (which a
  deployment with several processes sets anyway); the worker must see the same variable.
  A copy of the database alone then cannot sign as the garage.
- Neither set (a development machine): stored unsealed, marked `plain:`; the README says so.

Sealing uses only the standard library, as bookings/idempotency.py does: a keystream of
HMAC-SHA256(key, label ‖ salt ‖ counter) XORed with the secret, a fresh salt per secret, and
an HMAC tag over salt and ciphertext, so a wrong key (the variable changed) is detected
instead of signing with garbage.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from garagebook.config import Settings

_LABEL = b"garagebook webhooks: signing secret"
_SALT_BYTES = 16
_TAG_BYTES = 16
PLAIN = "plain:"
SEALED = "sealed:"


class SecretUnreadable(Exception):
    """The stored secret was sealed with another key than the one configured now."""


def new_secret() -> str:
    return f"whsec_{secrets.token_urlsafe(32)}"


def _key(settings: Settings) -> bytes | None:
    if settings.webhook_secret_key is not None:
        return settings.webhook_secret_key.get_secret_value().encode()
    if settings.session_secret is not None:
        base = settings.session_secret.get_secret_value().encode()
        return hmac.new(base, _LABEL, hashlib.sha256).digest()
    return None


def _stream(key: bytes, salt: bytes, length: int) -> bytes:
    blocks = [
        hmac.new(key, _LABEL + salt + counter.to_bytes(4, "big"), hashlib.sha256).digest()
        for counter in range((length + 31) // 32)
    ]
    return b"".join(blocks)[:length]


def _tag(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, b"tag" + data, hashlib.sha256).digest()[:_TAG_BYTES]


def seal(secret: str, settings: Settings) -> str:
    key = _key(settings)
    if key is None:
        return PLAIN + secret
    salt = secrets.token_bytes(_SALT_BYTES)
    data = secret.encode()
    cipher = salt + bytes(a ^ b for a, b in zip(data, _stream(key, salt, len(data)), strict=True))
    return SEALED + base64.urlsafe_b64encode(cipher + _tag(key, cipher)).decode()


def unseal(stored: str, settings: Settings) -> str:
    if stored.startswith(PLAIN):
        return stored[len(PLAIN) :]
    key = _key(settings)
    if key is None or not stored.startswith(SEALED):
        raise SecretUnreadable()
    try:
        raw = base64.urlsafe_b64decode(stored[len(SEALED) :].encode())
    except ValueError:
        raise SecretUnreadable() from None
    cipher, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
    if len(cipher) < _SALT_BYTES or not hmac.compare_digest(tag, _tag(key, cipher)):
        raise SecretUnreadable()
    salt, data = cipher[:_SALT_BYTES], cipher[_SALT_BYTES:]
    plain = bytes(a ^ b for a, b in zip(data, _stream(key, salt, len(data)), strict=True))
    return plain.decode()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `Garagebook-Signature` header: Stripe's scheme, `t=<unix>,v1=<hex HMAC-SHA256 of
    "<t>.<body>">`; the timestamp is signed too, so a receiver can refuse old replays."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"
