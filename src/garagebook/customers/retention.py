"""The retention period (PERSONAL_DATA_RETENTION_MONTHS): bookings that ended longer ago lose
their personal data, as an erasure would take it (`service.anonymise`), and so do waitlist
entries for days that long past, customer records no booking points to any more, and the
drop folder's mail files of that age. Applied daily by every worker (`Worker.apply_retention`);
a run is idempotent, so several workers running it do no harm. Each run that changed anything
leaves an audit row (actor "retention").
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.config import Settings
from garagebook.customers.service import ERASED_NAME, anonymise, erased_address, record
from garagebook.schema import bookings, customers, waitlist_entries

ACTOR = "retention"


def months_before(moment: datetime, months: int) -> datetime:
    """The same day and time `months` calendar months earlier (the month's last day when it is
    shorter: 31 March − 1 month is 28/29 February)."""
    index = moment.year * 12 + moment.month - 1 - months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


@dataclass(frozen=True)
class RetentionRun:
    bookings: int
    waitlist_entries: int
    customers: int
    mail_files: int

    @property
    def changed(self) -> bool:
        return any((self.bookings, self.waitlist_entries, self.customers, self.mail_files))


async def apply_retention(conn: AsyncConnection, settings: Settings, now: datetime) -> RetentionRun:
    """One run, in the caller's transaction (mail files: removed at once, they are not
    transactional; a rollback leaves files that were too old anyway)."""
    months = settings.personal_data_retention_months
    if months == 0:
        return RetentionRun(0, 0, 0, 0)
    cutoff = months_before(now, months)
    old_bookings = and_(
        bookings.c.ends_at < cutoff,
        bookings.c.customer_name != ERASED_NAME,
    )
    old_entries = and_(
        waitlist_entries.c.day < cutoff.astimezone(settings.timezone).date(),
        waitlist_entries.c.customer_name != ERASED_NAME,
    )
    count = await conn.scalar(select(func.count()).select_from(bookings).where(old_bookings))
    entries = await conn.scalar(
        select(func.count()).select_from(waitlist_entries).where(old_entries)
    )
    if count or entries:
        entries = await anonymise(
            conn, erased_address(), now, bookings_where=old_bookings, waitlist_where=old_entries
        )
    unused = await conn.execute(
        delete(customers).where(
            customers.c.updated_at < cutoff,
            customers.c.email.not_in(select(bookings.c.customer_email).distinct()),
        )
    )
    run = RetentionRun(
        int(count or 0), int(entries or 0), int(unused.rowcount or 0), _old_mail(settings, cutoff)
    )
    if run.changed:
        detail = (
            f"months={months} bookings={run.bookings} waitlist={run.waitlist_entries} "
            f"customers={run.customers} mail_files={run.mail_files}"
        )
        await record(conn, "retention", email=None, actor=ACTOR, now=now, detail=detail)
    return run


def _old_mail(settings: Settings, cutoff: datetime) -> int:
    folder = settings.mail_drop_dir
    if not folder.is_dir():
        return 0
    removed = 0
    for path in folder.glob("*.eml"):
        if path.stat().st_mtime < cutoff.timestamp():
            path.unlink(missing_ok=True)
            removed += 1
    return removed
