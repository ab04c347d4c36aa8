"""Every kind of job, in one place: what the code that writes a job (`queue.enqueue`, and the
booking's one statement in bookings/sql.py) and the handler that runs it agree on. Nothing
else lives here, so any module may import it (the handlers register themselves with
`jobs.handlers.handles`; the worker imports them all, see worker.py)."""

from __future__ import annotations

BOOKING_CONFIRMED = "booking_confirmed"
BOOKING_CANCELLED = "booking_cancelled"
BOOKING_RESCHEDULED = "booking_rescheduled"
BOOKING_REMINDER = "booking_reminder"
MOT_REMINDER = "mot_reminder"
WAITLIST_MATCH = "waitlist_match"  # a time may have freed up on a day: match its waitlist
WAITLIST_OFFERED = "waitlist_offered"
WAITLIST_OFFER_EXPIRED = "waitlist_offer_expired"
WEBHOOK_DELIVERY = "webhook_delivery"  # one event to one subscription (garagebook/webhooks)

ALL = (
    BOOKING_CONFIRMED,
    BOOKING_CANCELLED,
    BOOKING_RESCHEDULED,
    BOOKING_REMINDER,
    MOT_REMINDER,
    WAITLIST_MATCH,
    WAITLIST_OFFERED,
    WAITLIST_OFFER_EXPIRED,
    WEBHOOK_DELIVERY,
)
