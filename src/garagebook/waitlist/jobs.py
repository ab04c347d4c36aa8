"""The waitlist's jobs: matching a day (when a time may have freed up, and when an offer runs
out) and the offer mail."""

from __future__ import annotations

from datetime import date, datetime
from email.headerregistry import Address
from email.message import EmailMessage

from garagebook.jobs.handlers import JobContext, handles
from garagebook.jobs.mail import DeliveryFailed
from garagebook.jobs.messages import build_mail, local_times, message_id, one_line
from garagebook.jobs.queue import DONE, SKIPPED, Job
from garagebook.manage_links import offer_url
from garagebook.waitlist.service import (
    EXPIRY_KIND,
    OFFERED_KIND,
    Offer,
    load_offer,
    match_day,
)
from garagebook.waitlist.triggers import MATCH_KIND


def _day_of(job: Job) -> date:
    try:
        return date.fromisoformat(str(job.payload["day"]))
    except (KeyError, ValueError):
        raise DeliveryFailed("the job's payload names no day", permanent=True) from None


@handles(MATCH_KIND)
@handles(EXPIRY_KIND)
async def waitlist_match(job: Job, context: JobContext, now: datetime) -> str:
    """A time may have freed up on the job's day, or an offer there ran out (the expiry job is
    due when it does): matching ends offers not taken up and passes their times on."""
    await match_day(context.db, context.reservations, context.settings, _day_of(job), now)
    return DONE


@handles(OFFERED_KIND)
async def waitlist_offered(job: Job, context: JobContext, now: datetime) -> str:
    offer_id = job.payload.get("offer_id")
    if not isinstance(offer_id, int):
        raise DeliveryFailed("the job's payload names no offer", permanent=True)
    async with context.db.read() as conn:
        offer = await load_offer(conn, offer_id=offer_id)
    if offer is None:
        raise DeliveryFailed("the offer does not exist", permanent=True)
    if not offer.is_open(now):
        return SKIPPED  # taken up, given up or run out before the mail went: nothing to offer
    await context.mailer.send(compose_offer(offer, context, now))
    return DONE


def compose_offer(offer: Offer, context: JobContext, now: datetime) -> EmailMessage:
    settings = context.settings
    until = offer.expires_at.astimezone(settings.timezone)
    values = {
        "garage_name": settings.garage_name,
        "customer_name": one_line(offer.customer_name),
        "service": offer.service,
        "bay": offer.bay,
        "registration": offer.vehicle_registration,
        **local_times(offer.starts_at, offer.ends_at, settings.timezone),
        "hold_until": f"{until:%H:%M} on {until:%A} {until.day} {until:%B}",
        "offer_url": offer_url(settings, offer.id, offer.expires_at),
        "reference": f"W{offer.id}",
    }
    sender = settings.mail_sender
    return build_mail(
        to=Address(display_name=values["customer_name"], addr_spec=offer.customer_email),
        subject=f"A time came free: {offer.service}, {values['date']} at {values['start_time']}",
        template="waitlist_offered",
        context=values,
        message_id=message_id(f"waitlist-offer-{offer.id}", "offered", sender.domain),
        settings=settings,
        now=now,
    )
