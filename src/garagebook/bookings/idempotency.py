"""Idempotency records: what a retry of `POST /api/bookings` with the same `Idempotency-Key`
(and the same body) gets back.

- A record lives IDEMPOTENCY_TTL_HOURS (24 h by default, as Stripe keeps keys). After that the
  key is forgotten: it is not replayed, a new request with it books afresh (the insert
  overwrites the expired record), and the worker deletes expired records (`prune`).
- A replay answers the booking **as it is now**, not a copy of the first answer: 201 while it
  is still confirmed (moved: with its new time), 409 `idempotent_booking_closed` once it was
  cancelled or completed, never a stale 201 "confirmed".
- Nothing in a record opens the booking. The key is stored as its SHA-256. The manage token,
  which a client retrying after a lost 201 needs back and which the booking keeps only as a
  hash, is kept *sealed* with a key derived from the Idempotency-Key itself, which only the
  client has: a copy of the database cannot unseal it, the client's retry can. The trade-off:
  a guessable Idempotency-Key (say "1") makes the sealed token as guessable, for the 24 hours
  the record lives; the booking page's keys are 128 random bits, and the README asks clients
  for random keys. The stored response body has no token.

Sealing uses only the standard library: a keystream of HMAC-SHA256(Idempotency-Key,
label ‖ salt ‖ counter) XORed with the token, a fresh random salt per record (so no keystream
is ever used twice). No MAC is needed: the record is found by the key's hash, so only the
right key ever unseals it, and a tampered ciphertext can only yield a token that opens nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.config import Settings
from garagebook.schema import idempotency_keys

_LABEL = b"garagebook idempotency: manage token"
_SALT_BYTES = 16


def key_digest(key: str) -> str:
    """How a key is stored and looked up."""
    return hashlib.sha256(key.encode()).hexdigest()


def expired_before(settings: Settings, now: datetime) -> datetime:
    """Records created before this instant are expired."""
    return now - timedelta(hours=settings.idempotency_ttl_hours)


def _keystream(key: str, salt: bytes, length: int) -> bytes:
    blocks = []
    for counter in range(0, (length + 31) // 32):
        message = _LABEL + salt + counter.to_bytes(4, "big")
        blocks.append(hmac.new(key.encode(), message, hashlib.sha256).digest())
    return b"".join(blocks)[:length]


def seal(token: str, key: str) -> str:
    salt = secrets.token_bytes(_SALT_BYTES)
    data = token.encode()
    sealed = bytes(a ^ b for a, b in zip(data, _keystream(key, salt, len(data)), strict=True))
    return base64.urlsafe_b64encode(salt + sealed).decode()


def unseal(sealed: str, key: str) -> str | None:
    try:
        raw = base64.urlsafe_b64decode(sealed.encode())
        salt, data = raw[:_SALT_BYTES], raw[_SALT_BYTES:]
        stream = _keystream(key, salt, len(data))
        return bytes(a ^ b for a, b in zip(data, stream, strict=True)).decode()
    except (ValueError, UnicodeDecodeError):
        return None


async def prune(conn: AsyncConnection, settings: Settings, now: datetime) -> int:
    """Delete expired records; the worker calls this now and then."""
    result = await conn.execute(
        delete(idempotency_keys).where(
            idempotency_keys.c.created_at < expired_before(settings, now)
        )
    )
    return result.rowcount
