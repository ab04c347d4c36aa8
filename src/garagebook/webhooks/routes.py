"""The admin API of webhooks (admin token): subscriptions, their delivery log, replays."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from garagebook.deps import AdminDep, DatabaseDep, SettingsDep
from garagebook.fields import Id
from garagebook.http import error_responses, json_body, json_response, parse_json
from garagebook.webhooks import service

router = APIRouter(prefix="/api/admin/webhooks", tags=["webhooks"], dependencies=[AdminDep])

EventName = Literal[
    "booking.created", "booking.cancelled", "booking.rescheduled", "booking.completed"
]


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    url: str = Field(min_length=8, max_length=2000)
    events: list[EventName] = Field(min_length=1, max_length=4)
    enabled: bool = True


class WebhookChange(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    enabled: bool


@router.post(
    "",
    status_code=201,
    openapi_extra=json_body(WebhookIn),
    responses=error_responses(401, 403, 413, 415, 422, 503),
)
async def create_webhook(request: Request, db: DatabaseDep, settings: SettingsDep) -> Response:
    """A new subscription; the answer's `secret` is shown this once (422 for a URL into a
    private network unless WEBHOOK_ALLOW_NETWORKS allows it)."""
    body = await parse_json(request, WebhookIn)
    made = await service.create(db, settings, body.url, body.events, body.enabled)
    return json_response(made, 201)


@router.get("", responses=error_responses(401, 403, 503))
async def list_webhooks(db: DatabaseDep, settings: SettingsDep) -> Response:
    return json_response(await service.list_all(db, settings))


@router.get("/{webhook_id}", responses=error_responses(401, 403, 404, 503))
async def get_webhook(webhook_id: Id, db: DatabaseDep, settings: SettingsDep) -> Response:
    return json_response(await service.get(db, settings, webhook_id))


@router.patch(
    "/{webhook_id}",
    openapi_extra=json_body(WebhookChange),
    responses=error_responses(401, 403, 404, 413, 415, 422, 503),
)
async def change_webhook(
    webhook_id: Id, request: Request, db: DatabaseDep, settings: SettingsDep
) -> Response:
    """Enable or disable: `{"enabled": false}`."""
    body = await parse_json(request, WebhookChange)
    return json_response(await service.set_enabled(db, settings, webhook_id, body.enabled))


@router.delete("/{webhook_id}", status_code=204, responses=error_responses(401, 403, 404, 503))
async def delete_webhook(webhook_id: Id, db: DatabaseDep) -> Response:
    await service.remove(db, webhook_id)
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", responses=error_responses(401, 403, 404, 503))
async def list_deliveries(webhook_id: Id, db: DatabaseDep, settings: SettingsDep) -> Response:
    """The latest attempts first: event, status (delivered, failed, refused), answer code."""
    shown = await service.deliveries(db, settings, webhook_id)
    return json_response(shown)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/replay",
    status_code=202,
    responses=error_responses(401, 403, 404, 503),
)
async def replay_delivery(webhook_id: Id, delivery_id: Id, db: DatabaseDep) -> Response:
    """Send that attempt's event again (same event id), as a new job with fresh attempts."""
    return json_response(await service.replay(db, webhook_id, delivery_id), 202)
