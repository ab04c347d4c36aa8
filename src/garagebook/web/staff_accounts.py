"""The staff accounts page at `/staff/accounts` (owners only, `OwnerDep`): list the accounts,
add one, change a role, remove one. The rules (the last owner stays, a change ends that
account's sessions) are in `accounts`, shared with `garagebook staff`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from garagebook.config import Settings
from garagebook.deps import DatabaseDep, SettingsDep
from garagebook.errors import DomainError, InvalidRequest, http_status, page_message
from garagebook.timeutil import utcnow
from garagebook.web.accounts import (
    MIN_PASSWORD_LENGTH,
    add_account,
    change_role,
    list_accounts,
    remove_account,
)
from garagebook.web.auth import ROLES, OwnerDep, Role, StaffUser, as_role
from garagebook.web.forms import form_text, staff_form
from garagebook.web.pages import render

router = APIRouter(prefix="/staff/accounts", include_in_schema=False)

_DONE = {
    "added": "Account added. They can sign in now.",
    "role": "Role changed. That account's sessions have ended: it signs in again.",
    "removed": "Account removed. Its sessions have ended.",
}


async def _page(
    request: Request,
    db: DatabaseDep,
    settings: Settings,
    user: StaffUser,
    *,
    flash: str | None = None,
    error: str | None = None,
    typed: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    async with db.read() as conn:
        accounts = await list_accounts(conn)
    context = {
        "user": user,
        "accounts": accounts,
        "roles": ROLES,
        "flash": flash,
        "error": error,
        "typed": typed or {"name": "", "role": "staff"},
        "min_password": MIN_PASSWORD_LENGTH,
    }
    return render(request, settings, "staff_accounts.html", context, status_code)


@router.get("")
async def accounts_page(
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    user: OwnerDep,
    done: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    return await _page(request, db, settings, user, flash=_DONE.get(done or ""))


def _role(form: FormData) -> Role:
    try:
        return as_role(form_text(form, "role"))
    except ValueError as exc:
        raise InvalidRequest("Pick a role: owner or staff.") from exc


@router.post("")
async def add(request: Request, db: DatabaseDep, settings: SettingsDep, user: OwnerDep) -> Response:
    form = await staff_form(request, settings)
    if isinstance(form, Response):
        return form
    typed = {"name": form_text(form, "name"), "role": form_text(form, "role")}
    password = form.get("password")
    try:
        async with db.transaction() as conn:
            await add_account(
                conn,
                typed["name"],
                password if isinstance(password, str) else "",
                _role(form),
                utcnow(),
            )
    except DomainError as exc:
        return await _refused(request, db, settings, user, exc, typed)
    return RedirectResponse("/staff/accounts?done=added", 303)


@router.post("/{account_id}/role")
async def set_role(
    account_id: int, request: Request, db: DatabaseDep, settings: SettingsDep, user: OwnerDep
) -> Response:
    form = await staff_form(request, settings)
    if isinstance(form, Response):
        return form
    try:
        async with db.transaction() as conn:
            await change_role(conn, account_id, _role(form), utcnow())
    except DomainError as exc:
        return await _refused(request, db, settings, user, exc)
    if account_id == user.id:  # their own session has just ended
        return RedirectResponse("/staff/login", 303)
    return RedirectResponse("/staff/accounts?done=role", 303)


@router.post("/{account_id}/remove")
async def remove(
    account_id: int, request: Request, db: DatabaseDep, settings: SettingsDep, user: OwnerDep
) -> Response:
    form = await staff_form(request, settings)
    if isinstance(form, Response):
        return form
    try:
        async with db.transaction() as conn:
            await remove_account(conn, account_id)
    except DomainError as exc:
        return await _refused(request, db, settings, user, exc)
    if account_id == user.id:
        return RedirectResponse("/staff/login", 303)
    return RedirectResponse("/staff/accounts?done=removed", 303)


async def _refused(
    request: Request,
    db: DatabaseDep,
    settings: Settings,
    user: StaffUser,
    error: DomainError,
    typed: dict[str, str] | None = None,
) -> Response:
    """The page again with why, and what was typed (never the password)."""
    message = error.message if isinstance(error, InvalidRequest) else page_message(error)
    return await _page(
        request, db, settings, user, error=message, typed=typed, status_code=http_status(error)
    )
