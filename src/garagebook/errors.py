"""Domain errors. They know nothing of HTTP or pages: `ANSWERS` below is the one mapping, used
by the API's error handler (http.py) and by every page (web/). Each error has a stable
machine-readable `code` and its data; its row says the HTTP status, what a page tells a person,
and the short key a page redirect carries (`/staff?error=taken`). Rows are found through the
class's MRO, so a subclass answers as its parent until it has a row of its own."""

from __future__ import annotations

from dataclasses import dataclass
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


class ServiceDoesNotFit(SlotUnavailable):
    """The start is free but the service is longer than the free time from there (the slots
    after it on the bay are taken or missing). The same 409 `slot_unavailable` for the API."""

    message = "The service does not fit at that time: the slots after it are not free."

    def __init__(self) -> None:
        super().__init__("database")


class ClosureNotFound(DomainError):
    code = "closure_not_found"
    message = "No such closure."


class ClosureReopened(DomainError):
    code = "closure_reopened"
    message = "That closure was already reopened."


class NothingToClose(DomainError):
    """A closure must claim at least one slot: a time with none on that bay would close
    nothing, and say it had."""

    code = "nothing_to_close"
    message = "That bay has no slots in that time: there is nothing to close."


class WrongBay(SlotUnavailable):
    """The time is on a bay that cannot do what the service needs (the setup's `can`)."""

    message = "That time is on a bay that does not do this service: pick another time."

    def __init__(self) -> None:
        super().__init__("database")


class TechnicianUnavailable(SlotUnavailable):
    """A reassignment the database refused for the technician: their slot at that time is
    taken or closed, their day is absent or full, or they lack the skill or are retired. The
    same 409 `slot_unavailable` as a booking refused for want of a technician."""

    message = "That technician cannot take this booking at its time."

    def __init__(self, message: str | None = None) -> None:
        super().__init__("database", message)


class TechnicianNotFound(DomainError):
    code = "technician_not_found"
    message = "No such technician."


class AbsenceNotFound(DomainError):
    code = "absence_not_found"
    message = "No such absence."


class AbsenceWithdrawn(DomainError):
    code = "absence_withdrawn"
    message = "That absence was already withdrawn."


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


class OfferAlreadyBooked(OfferGone):
    """Taken up by its own customer: the booking exists (a second click on the link)."""

    message = "You have booked this time already: see your confirmation mail."


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


class StaffSignInRequired(DomainError):
    code = "sign_in_required"
    message = "Sign in to the staff area first."


class OwnerOnly(DomainError):
    code = "owner_only"
    message = "Only an owner of the garage may do this."


class LastOwner(DomainError):
    """The garage keeps at least one owner: somebody must be able to change its settings."""

    code = "last_owner"
    message = "That is the garage's only owner: make another account an owner first."


class StaffNameTaken(DomainError):
    code = "staff_name_taken"
    message = "There is already a staff account with that name."


class StaffUserNotFound(DomainError):
    code = "staff_user_not_found"
    message = "No such staff account."


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


class JobNotFound(DomainError):
    code = "job_not_found"
    message = "No such job."


class JobNotRetryable(DomainError):
    code = "job_not_retryable"
    message = "That job is still queued or running; only finished or dead jobs can be put back."


class FeedNotFound(DomainError):
    """An unknown or revoked calendar feed (or its id in the admin API): the same 404, so a
    token says nothing about whether it ever existed."""

    code = "feed_not_found"
    message = "No such calendar feed."


class CustomerNotFound(DomainError):
    code = "customer_not_found"
    message = "Nothing is held about that e-mail address."


class CustomerHasFutureBooking(DomainError):
    """Erasure while the customer still has a confirmed booking to come (or an open waitlist
    offer, which they can still take up): the garage needs their details for it. The error
    names it (`booking` or `waitlist_offer`); cancel it or let it pass, then erase."""

    code = "customer_has_future_booking"


@dataclass(frozen=True)
class Problem:
    """One problem of a garage setup document: where (`services[2].minutes`), what, and for a
    TOML file its line."""

    path: str
    message: str
    line: int | None = None

    def as_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"path": self.path, "message": self.message}
        if self.line is not None:
            shown["line"] = self.line
        return shown

    def __str__(self) -> str:
        where = self.path or "(document)"
        return (
            f"{where} (line {self.line}): {self.message}"
            if self.line
            else f"{where}: {self.message}"
        )


class InvalidGarage(DomainError):
    """A garage setup document that cannot be applied; `problems` lists every reason."""

    code = "invalid_garage"

    def __init__(self, problems: list[Problem]) -> None:
        count = len(problems)
        super().__init__(
            f"The garage setup has {count} problem{'s' if count != 1 else ''}; "
            "nothing was applied.",
            problems=[p.as_json() for p in problems],
        )
        self.problems = problems


class GarageNotSetUp(DomainError):
    code = "garage_not_set_up"
    message = (
        "The garage has no setup document yet: apply one (`garagebook garage apply FILE`, "
        "or `garagebook seed` for the demo garage)."
    )


class UnsafeGarageChange(DomainError):
    """A change that future bookings make unsafe (a new slot length or time zone would move or
    split their times): refused whole, with what to do instead."""

    code = "unsafe_garage_change"


class SlotTooSoon(DomainError):
    """The time starts sooner than the garage's minimum notice for online bookings."""

    code = "slot_too_soon"
    message = "That time starts too soon to be booked online."

    def __init__(self, min_notice_minutes: int) -> None:
        super().__init__(
            f"That time starts too soon to be booked online: the garage needs "
            f"{min_notice_minutes} minutes' notice. Pick a later time or call the garage.",
            min_notice_minutes=min_notice_minutes,
        )


class WebhookNotFound(DomainError):
    code = "webhook_not_found"
    message = "No such webhook subscription."


class WebhookDeliveryNotFound(DomainError):
    code = "webhook_delivery_not_found"
    message = "No such delivery of this webhook subscription."


class WebhookUrlRefused(InvalidRequest):
    """SSRF: the receiver's host is not a public address (webhooks/targets.py)."""

    code = "webhook_url_refused"

    def __init__(self, problem: str) -> None:
        super().__init__(
            f"The webhook URL cannot be used: {problem}",
            fields=[{"field": "url", "problem": problem}],
        )


@dataclass(frozen=True)
class Answer:
    status: int  # the HTTP status, for the API and the pages alike
    page: str  # what a page tells a person (the API's `message` may say more, for developers)
    # What a page redirect carries in its query (`?error=`, at most 20 characters: the pages'
    # query limit); default: the error's code.
    key: str = ""


ANSWERS: dict[type[DomainError], Answer] = {
    SlotUnavailable: Answer(409, "That time is no longer free: someone booked it first.", "taken"),
    ServiceDoesNotFit: Answer(
        409, "That service does not fit at that time: the times after it are not free.", "no_fit"
    ),
    WrongBay: Answer(409, "That time is on a bay that does not do this service.", "wrong_bay"),
    SlotOverlaps: Answer(409, "That bay already has a slot overlapping that time.", "overlaps"),
    BookingClosed: Answer(409, "That booking is no longer confirmed: it cannot be changed."),
    AlreadyCancelled: Answer(409, "That booking was already cancelled.", "already"),
    BookingCompleted: Answer(
        409, "That booking is done (marked completed): it can no longer be changed."
    ),
    OfferGone: Answer(409, OfferGone.message),
    OfferAlreadyBooked: Answer(409, OfferAlreadyBooked.message, "offer_booked"),
    OfferNotFound: Answer(404, "That offer does not exist. Check that you copied all of the link."),
    WaitlistEntryNotFound: Answer(
        404, "That waitlist entry does not exist (any more).", "entry_not_found"
    ),
    TechnicianUnavailable: Answer(
        409,
        "That technician cannot take it then: busy, away, fully booked or without the skill.",
        "tech_taken",
    ),
    TechnicianNotFound: Answer(404, "That technician does not exist.", "no_technician"),
    AbsenceNotFound: Answer(404, "That absence does not exist (any more).", "no_absence"),
    AbsenceWithdrawn: Answer(409, "That absence was already withdrawn.", "withdrawn"),
    SlotNotFound: Answer(404, "That time does not exist (any more)."),
    ClosureNotFound: Answer(404, "That closed time does not exist (any more)."),
    ClosureReopened: Answer(409, "That time was already reopened.", "reopened_already"),
    NothingToClose: Answer(422, "There is no slot in that time to close.", "nothing_to_close"),
    ServiceNotFound: Answer(404, "That service is not offered (any more). Please pick another."),
    BayNotFound: Answer(404, "That bay does not exist."),
    BookingNotFound: Answer(404, "That booking or slot no longer exists.", "not_found"),
    VehicleNotFound: Answer(404, "No booking here was ever for that car."),
    SlotInPast: Answer(422, "That time has already started; pick a time in the future.", "past"),
    SlotTooSoon: Answer(
        422, "That time starts too soon to be booked online; pick a later time.", "too_soon"
    ),
    GarageNotSetUp: Answer(404, "The garage is not set up yet."),
    InvalidGarage: Answer(
        422, "The garage setup has problems; nothing was changed.", "invalid_garage"
    ),
    UnsafeGarageChange: Answer(
        409, "That change is not safe while future bookings exist; nothing was changed.", "unsafe"
    ),
    IdempotencyKeyReused: Answer(
        422,
        "This form was already sent with other details. Reload the page and try again.",
        "key_reused",
    ),
    InvalidRequest: Answer(422, "Some details were not valid; nothing was changed.", "invalid"),
    PayloadTooLarge: Answer(413, "That was more than this form can take."),
    RateLimited: Answer(
        429, "Too many tries from your connection in a short time. Wait a minute, then try again."
    ),
    NotAuthenticated: Answer(401, "Please sign in first."),
    Forbidden: Answer(403, "That is not allowed."),
    StaffSignInRequired: Answer(401, "Please sign in to the staff area first.", "sign_in"),
    OwnerOnly: Answer(
        403, "Only an owner of the garage may open this page. Ask an owner to do it for you."
    ),
    LastOwner: Answer(409, "That is the garage's only owner. Make another account an owner first."),
    StaffNameTaken: Answer(
        409, "There is already an account with that name: pick another.", "name_taken"
    ),
    StaffUserNotFound: Answer(404, "That staff account does not exist (any more).", "no_user"),
    AdminNotConfigured: Answer(403, "Administration is switched off on this server."),
    DatabaseUnavailable: Answer(
        503, "The booking database did not answer; try again in a moment.", "unavailable"
    ),
    NotDueYet: Answer(
        409,
        "That booking is on a later day: it can be marked done on its day, not before.",
        "not_due",
    ),
    NotCompleted: Answer(
        409, "That booking is not marked done (any more): nothing to undo.", "not_done"
    ),
    BookingLimitReached: Answer(
        409,
        "You already have as many bookings as one customer or car may hold online. "
        "Please call the garage to book more.",
        "limit",
    ),
    IdempotentBookingClosed: Answer(
        409, "This form was sent before, and that booking is no longer confirmed.", "closed"
    ),
    UnsupportedMediaType: Answer(
        415, "That was not sent as a form or JSON this server reads.", "media_type"
    ),
    JobNotFound: Answer(404, "No such job."),
    JobNotRetryable: Answer(409, JobNotRetryable.message),
    FeedNotFound: Answer(404, "That calendar feed does not exist (any more)."),
    CustomerNotFound: Answer(404, "Nothing is held about that e-mail address."),
    CustomerHasFutureBooking: Answer(
        409,
        "That customer has a confirmed booking to come: cancel it, or erase after it is over.",
        "future_booking",
    ),
    WebhookNotFound: Answer(404, "That webhook does not exist (any more).", "no_webhook"),
    WebhookDeliveryNotFound: Answer(404, "That delivery is not in the log.", "no_delivery"),
    WebhookUrlRefused: Answer(
        422,
        "That URL points into a private network (or does not resolve): webhooks go to public "
        "addresses only.",
        "url_refused",
    ),
}

# A DomainError with no row anywhere in its MRO: a bug (test_errors.py fails on it first).
UNMAPPED = Answer(500, "Something went wrong on our side. Please try again.", "internal_error")


def answer_for(error: DomainError | type[DomainError]) -> Answer:
    """The row of the error's class, or of the nearest ancestor that has one."""
    cls = error if isinstance(error, type) else type(error)
    for ancestor in cls.__mro__:
        answer = ANSWERS.get(ancestor)
        if answer is not None:
            return answer if answer.key else _with_key(ancestor, answer)
    return UNMAPPED


def _with_key(cls: type, answer: Answer) -> Answer:
    return Answer(answer.status, answer.page, getattr(cls, "code", UNMAPPED.key))


def http_status(error: DomainError) -> int:
    return answer_for(error).status


def page_message(error: DomainError) -> str:
    return answer_for(error).page


def page_key(error: DomainError) -> str:
    return answer_for(error).key


_BY_KEY = {answer_for(cls).key: answer_for(cls).page for cls in ANSWERS}


def page_message_for_key(key: str | None) -> str | None:
    """The page message a redirect's `?error=<key>` stands for; None for an unknown key."""
    return _BY_KEY.get(key or "")
