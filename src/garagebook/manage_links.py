"""Signed manage links: how a customer's mail leads back to their booking's page.

Why a signed link rather than the booking's cancel token: the cancel token is shown once (the
booking's 201 and the confirmation page) and stored only as a hash, and a mail is composed
later, by a worker, from the booking's id. Putting the token itself into the mail would mean
keeping it somewhere readable until then (the outbox payload, the database). Instead the mail
carries `/manage/<signed booking id>`: an HMAC (itsdangerous) of the booking id under
MANAGE_LINK_SECRET, made when the mail is composed. So

- the outbox payload and the database hold nothing that opens a booking: a leaked database
  dump or job row gives booking ids, and an id alone opens nothing (DESIGN.md);
- a leaked mail gives what the mail's reader has anyway — that one booking's page (see, move,
  cancel it) — until MANAGE_LINK_VALID_AFTER past the booking's end (the expiry is inside
  the signed value), never any other booking;
- rotating MANAGE_LINK_SECRET ends every link already sent (the cancel token keeps working);
- a link keeps working across moves (it names the booking; its expiry is the time it was sent
  for, plus the grace period);
- the same mail sent twice carries the same link (no timestamp in it): at-least-once delivery
  repeats the same message.

The secret is MANAGE_LINK_SECRET, else derived from SESSION_SECRET (the salt keeps the two
uses apart: a session cookie is never a manage link), else — only for the embedded default, one
process that writes and reads its own links — random per process. The secret must be the same
in every server and worker process, or links mailed by one are refused by another."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from itsdangerous import BadSignature, URLSafeSerializer

from garagebook.config import Settings

# After the booking's end, the link still shows it (e.g. to look up the reference) this long.
MANAGE_LINK_VALID_AFTER = timedelta(days=90)
_SALT = "garagebook.manage-link"
_process_secret = secrets.token_hex(32)


def _secret(settings: Settings) -> str:
    if settings.manage_link_secret is not None:
        return settings.manage_link_secret.get_secret_value()
    if settings.session_secret is not None:
        return "derived-from-session-secret:" + settings.session_secret.get_secret_value()
    return _process_secret


def _serializer(settings: Settings) -> URLSafeSerializer:
    return URLSafeSerializer(_secret(settings), salt=_SALT)


def is_signed_link(token: str) -> bool:
    """Signed links contain dots; cancel tokens (base64url) never do."""
    return "." in token


def manage_token(settings: Settings, booking_id: str, ends_at: datetime) -> str:
    until = int((ends_at + MANAGE_LINK_VALID_AFTER).timestamp())
    return str(_serializer(settings).dumps([booking_id, until]))


def manage_url(settings: Settings, booking_id: str, ends_at: datetime) -> str:
    return f"{settings.public_url}/manage/{manage_token(settings, booking_id, ends_at)}"


# A waitlist offer's mail: the same idea for the offer page (`/waitlist/offers/<signed id>`),
# valid a day past the offer's own end (the page then says it is gone).
OFFER_LINK_VALID_AFTER = timedelta(days=1)
_OFFER_SALT = "garagebook.waitlist-offer-link"


def offer_url(settings: Settings, offer_id: int, expires_at: datetime) -> str:
    until = int((expires_at + OFFER_LINK_VALID_AFTER).timestamp())
    token = URLSafeSerializer(_secret(settings), salt=_OFFER_SALT).dumps([offer_id, until])
    return f"{settings.public_url}/waitlist/offers/{token}"


def offer_id_of(settings: Settings, token: str, now: datetime | None = None) -> int | None:
    try:
        value = URLSafeSerializer(_secret(settings), salt=_OFFER_SALT).loads(token)
    except BadSignature:
        return None
    match value:
        case [int(offer_id), int(until)]:
            moment = now or datetime.now(UTC)
            return offer_id if moment.timestamp() <= until else None
    return None


def booking_id_of(settings: Settings, token: str, now: datetime | None = None) -> str | None:
    """The booking a signed link names, or None: forged, altered, or past its expiry."""
    try:
        value = _serializer(settings).loads(token)
    except BadSignature:
        return None
    match value:
        case [str(booking_id), int(until)]:
            moment = now or datetime.now(UTC)
            return booking_id if moment.timestamp() <= until else None
    return None
