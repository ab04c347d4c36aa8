"""The owner's webhooks page, `/staff/webhooks`: subscriptions (add, enable, disable, remove),
and per subscription its delivery log with a Replay button per attempt. The same functions as
the admin API (webhooks/service.py); only owners (`OwnerDep`), since a subscription sends
customers' bookings to another system.

A new subscription's secret is shown on the page that answers the form, and never again: it is
not put in a redirect's URL (that would leave it in the browser's history and logs)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from garagebook.config import Settings
from garagebook.db import Database
from garagebook.deps import DatabaseDep, SettingsDep
from garagebook.errors import DomainError, WebhookNotFound, http_status, page_message
from garagebook.fields import Id
from garagebook.web.auth import OwnerDep, StaffUser
from garagebook.web.forms import form_text, staff_form
from garagebook.web.pages import render
from garagebook.web.settings_pages import PAGES
from garagebook.webhooks import service
from garagebook.webhooks.events import EVENTS

router = APIRouter(prefix="/staff/webhooks", include_in_schema=False)

DONE = {
    "enabled": "Enabled: it gets new events again.",
    "disabled": "Disabled: it gets no events, and queued ones are skipped.",
    "removed": "Removed, with its delivery log.",
    "replayed": "Queued again: the same event (same id) goes out within moments.",
}


async def _list_page(
    request: Request,
    db: Database,
    settings: Settings,
    user: StaffUser,
    status_code: int = 200,
    **context: Any,
) -> Response:
    hooks = await service.list_all(db, settings)
    done = DONE.get(request.query_params.get("done", ""))
    page = {"user": user, "hooks": hooks, "events": EVENTS, "pages": PAGES.values(), "done": done}
    return render(request, settings, "staff_webhooks.html", {**page, **context}, status_code)


@router.get("")
async def webhooks_page(
    request: Request, db: DatabaseDep, settings: SettingsDep, user: OwnerDep
) -> Response:
    return await _list_page(request, db, settings, user)


@router.post("")
async def add_webhook(
    request: Request, db: DatabaseDep, settings: SettingsDep, user: OwnerDep
) -> Response:
    form = await staff_form(request, settings)
    if isinstance(form, Response):
        return form
    url = form_text(form, "url")[:2000]
    events = [event for event in EVENTS if form.get(event) == "on"]
    if not url or not events:
        error = "Give the receiver's URL and tick at least one event."
        return await _list_page(request, db, settings, user, 422, error=error, url=url)
    try:
        made = await service.create(db, settings, url, events)
    except DomainError as exc:
        return await _list_page(
            request, db, settings, user, http_status(exc), error=exc.message, url=url
        )
    return await _list_page(request, db, settings, user, created=made)


async def _change(request: Request, settings: Settings, change: Any, done: str) -> Response:
    form = await staff_form(request, settings)
    if isinstance(form, Response):
        return form
    try:
        await change()
    except WebhookNotFound:
        return RedirectResponse("/staff/webhooks", 303)
    return RedirectResponse(f"/staff/webhooks?done={done}", 303)


@router.post("/{webhook_id}/enable")
async def enable_webhook(
    webhook_id: Id, request: Request, db: DatabaseDep, settings: SettingsDep, user: OwnerDep
) -> Response:
    return await _change(
        request, settings, lambda: service.set_enabled(db, settings, webhook_id, True), "enabled"
    )


@router.post("/{webhook_id}/disable")
async def disable_webhook(
    webhook_id: Id, request: Request, db: DatabaseDep, settings: SettingsDep, user: OwnerDep
) -> Response:
    return await _change(
        request, settings, lambda: service.set_enabled(db, settings, webhook_id, False), "disabled"
    )


@router.post("/{webhook_id}/delete")
async def delete_webhook(
    webhook_id: Id, request: Request, db: DatabaseDep, settings: SettingsDep, user: OwnerDep
) -> Response:
    return await _change(request, settings, lambda: service.remove(db, webhook_id), "removed")


@router.get("/{webhook_id}")
async def deliveries_page(
    webhook_id: Id, request: Request, db: DatabaseDep, settings: SettingsDep, user: OwnerDep
) -> Response:
    try:
        hook = await service.get(db, settings, webhook_id)
        log = await service.deliveries(db, settings, webhook_id)
    except WebhookNotFound as exc:
        message = {"title": "No such webhook", "message": page_message(exc)}
        return render(request, settings, "message.html", message, 404)
    done = DONE.get(request.query_params.get("done", ""))
    context: dict[str, Any] = {
        "user": user,
        "hook": hook,
        "deliveries": log,
        "pages": PAGES.values(),
        "done": done,
    }
    return render(request, settings, "staff_webhook.html", context)


@router.post("/{webhook_id}/deliveries/{delivery_id}/replay")
async def replay_delivery(
    webhook_id: Id,
    delivery_id: Id,
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    user: OwnerDep,
) -> Response:
    form = await staff_form(request, settings)
    if isinstance(form, Response):
        return form
    try:
        await service.replay(db, webhook_id, delivery_id)
    except DomainError:
        return RedirectResponse(f"/staff/webhooks/{webhook_id}", 303)
    return RedirectResponse(f"/staff/webhooks/{webhook_id}?done=replayed", 303)
