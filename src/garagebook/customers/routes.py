"""A customer's data over the admin API: export (`GET`) and erasure (`DELETE`), each audited
and rate limited, and the audit itself."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter
from starlette.responses import Response

from garagebook.bookings.routes import private_json
from garagebook.customers.service import (
    audit_log,
    erase_customer,
    export_customer,
    remove_mail_files,
)
from garagebook.deps import AdminDep, DatabaseDep, SettingsDep, rate_limit
from garagebook.errors import InvalidRequest
from garagebook.http import error_responses
from garagebook.timeutil import utcnow

router = APIRouter(tags=["a customer's data"])

ADMIN_ACTOR = "admin token"  # who asked, in the audit, for the admin API
_EMAIL_MAX = 254


def checked_email(email: str) -> str:
    if not 3 <= len(email) <= _EMAIL_MAX or "@" not in email:
        raise InvalidRequest("That is not an e-mail address.")
    return email


@router.get(
    "/api/admin/customers/{email}",
    dependencies=[AdminDep, rate_limit("personal_data")],
    responses=error_responses(401, 403, 404, 422, 429, 503),
)
async def get_customer(email: str, db: DatabaseDep, settings: SettingsDep) -> Response:
    """Everything held about the customer at this address: their customer record, bookings,
    vehicles, waitlist entries, and the mails sent (or queued) about them. Recorded in the
    audit."""
    address = checked_email(email)
    async with db.transaction() as conn:
        data = await export_customer(conn, settings, address, actor=ADMIN_ACTOR, now=utcnow())
    return private_json(data)


@router.delete(
    "/api/admin/customers/{email}",
    dependencies=[AdminDep, rate_limit("personal_data")],
    responses=error_responses(401, 403, 404, 409, 422, 429, 503),
)
async def delete_customer(email: str, db: DatabaseDep, settings: SettingsDep) -> Response:
    """Erase their name, e-mail, phone and notes everywhere; their bookings stay as anonymous
    rows. 409 `customer_has_future_booking` (naming it) while a confirmed booking of theirs is
    to come. Recorded in the audit (by the address's hash)."""
    address = checked_email(email)
    async with db.transaction() as conn:
        erased = await erase_customer(conn, settings, address, actor=ADMIN_ACTOR, now=utcnow())
    files = remove_mail_files(settings, address)
    return private_json({"erased": True, **asdict(erased), "mail_files": files})


@router.get(
    "/api/admin/personal-data/audit",
    dependencies=[AdminDep],
    responses=error_responses(401, 403, 503),
)
async def get_audit(db: DatabaseDep) -> Response:
    """The latest 100 exports, erasures and retention runs, newest first."""
    async with db.read() as conn:
        return private_json(await audit_log(conn))
