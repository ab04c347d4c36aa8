"""Domain errors. They know nothing of HTTP: `HTTP_STATUS` below is the one mapping, used by
the error handlers in app.py. Each error has a stable machine-readable `code` and its data."""

from __future__ import annotations

from typing import Any, Literal


class DomainError(Exception):
    code: str = "error"
    message: str = "Something went wrong."

    def __init__(self, message: str | None = None, **data: Any) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        self.data = data

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.data}}

    def headers(self) -> dict[str, str] | None:
        return None


class SlotUnavailable(DomainError):
    code = "slot_unavailable"
    message = "That time is no longer available."

    def __init__(
        self, rejected_by: Literal["reservation", "database"], message: str | None = None
    ) -> None:
        super().__init__(message, rejected_by=rejected_by)


class SlotNotFound(DomainError):
    code = "slot_not_found"
    message = "No such slot."


class ServiceNotFound(DomainError):
    code = "service_not_found"
    message = "No such service."


class BayNotFound(DomainError):
    code = "bay_not_found"
    message = "No such bay."


class BookingNotFound(DomainError):
    code = "booking_not_found"
    message = "No such booking."


class VehicleNotFound(DomainError):
    code = "vehicle_not_found"
    message = "No vehicle with that registration has been booked here."


class BookingClosed(DomainError):
    """The booking is no longer confirmed: it cannot be moved or cancelled."""

    code = "booking_closed"


class AlreadyCancelled(BookingClosed):
    code = "already_cancelled"
    message = "This booking is already cancelled."


class BookingCompleted(BookingClosed):
    code = "booking_completed"
    message = "This booking is done (the garage marked it completed): it can no longer change."


class NotCompleted(BookingClosed):
    """Undoing "done" on a booking that is not (or no longer) marked done."""

    code = "booking_not_completed"
    message = "That booking is not marked done."


class NotDueYet(DomainError):
    """Marking done a booking on a later day than the garage's today (the staff pages)."""

    code = "booking_not_due"
    message = "That booking is on a later day: it can be marked done on its day."


def closed_because(status: str) -> BookingClosed:
    return BookingCompleted() if status == "completed" else AlreadyCancelled()


class OfferNotFound(DomainError):
    code = "offer_not_found"
    message = "No such waitlist offer."


class OfferGone(DomainError):
    code = "offer_gone"
    message = "This offer has ended: it was taken up, or it ran out and passed to the next person."


class WaitlistEntryNotFound(DomainError):
    code = "waitlist_entry_not_found"
    message = "No such waitlist entry."


class SlotInPast(DomainError):
    code = "validation_error"
    message = "That slot has already started; pick a time in the future."


class SlotOverlaps(DomainError):
    code = "slot_overlaps"
    message = "The bay already has a slot overlapping that time."


_LIMIT_MESSAGES = {
    "email": "This e-mail address already has {max} upcoming bookings, the most we take "
    "online. Please cancel one, or call the garage.",
    "registration": "This vehicle already has {max} upcoming bookings, the most we take "
    "online. Please cancel one, or call the garage.",
    "email_day": "This e-mail address already has {max} bookings on that day, the most we "
    "take online for one day. Please pick another day, or call the garage.",
}


class BookingLimitReached(DomainError):
    """The customer already has as many live bookings as may be booked online (the caps in
    config.py); staff can still book for them."""

    code = "booking_limit_reached"

    def __init__(self, limit: str, maximum: int) -> None:
        super().__init__(_LIMIT_MESSAGES[limit].format(max=maximum), limit=limit, max=maximum)


class IdempotentBookingClosed(DomainError):
    """A retry with an Idempotency-Key whose booking is no longer confirmed: it is not
    answered 201 "confirmed" as it once was."""

    code = "idempotent_booking_closed"

    def __init__(self, booking_id: str, reference: str, status: str) -> None:
        super().__init__(
            f"This Idempotency-Key made booking {reference}, which is now {status}.",
            booking_id=booking_id,
            reference=reference,
            status=status,
        )


class IdempotencyKeyReused(DomainError):
    code = "idempotency_key_reused"
    message = "This Idempotency-Key was already used with a different request body."


class InvalidRequest(DomainError):
    code = "validation_error"
    message = "The request is not valid."


class PayloadTooLarge(DomainError):
    code = "payload_too_large"
    message = "The request body is too large."


class UnsupportedMediaType(DomainError):
    code = "unsupported_media_type"
    message = "Send the body as JSON, with 'Content-Type: application/json'."


class AdminNotConfigured(DomainError):
    code = "admin_disabled"
    message = "Admin endpoints are disabled: ADMIN_TOKEN is not set on the server."


class NotAuthenticated(DomainError):
    code = "not_authenticated"
    message = "Send the admin token as 'Authorization: Bearer <token>'."


class Forbidden(DomainError):
    code = "forbidden"
    message = "That token is not allowed here."


class RateLimited(DomainError):
    code = "rate_limited"
    message = "Too many requests from your address; please wait a moment and try again."

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after=retry_after)

    def headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(self.data["retry_after"])}


class DatabaseUnavailable(DomainError):
    code = "database_unavailable"
    message = "The booking database cannot be reached right now; please try again shortly."


HTTP_STATUS: dict[type[DomainError], int] = {
    SlotUnavailable: 409,
    SlotOverlaps: 409,
    AlreadyCancelled: 409,
    BookingCompleted: 409,
    NotCompleted: 409,
    NotDueYet: 409,
    OfferGone: 409,
    OfferNotFound: 404,
    WaitlistEntryNotFound: 404,
    SlotNotFound: 404,
    ServiceNotFound: 404,
    BayNotFound: 404,
    BookingNotFound: 404,
    VehicleNotFound: 404,
    SlotInPast: 422,
    IdempotencyKeyReused: 422,
    BookingLimitReached: 409,
    IdempotentBookingClosed: 409,
    InvalidRequest: 422,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    RateLimited: 429,
    NotAuthenticated: 401,
    Forbidden: 403,
    AdminNotConfigured: 403,
    DatabaseUnavailable: 503,
}


def http_status(error: DomainError) -> int:
    return HTTP_STATUS.get(type(error), 500)
