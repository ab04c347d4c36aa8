"""Calendar feeds over HTTP: the admin API that makes and revokes them, and the feed itself."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import Field
from starlette.responses import Response

from garagebook.bookings.routes import private_json
from garagebook.bookings.schemas import OneLine, _Strict
from garagebook.deps import AdminDep, DatabaseDep, SettingsDep
from garagebook.errors import FeedNotFound
from garagebook.feeds.service import create_feed, feed_ics, list_feeds, revoke_feed
from garagebook.fields import Id
from garagebook.http import error_responses, json_body, parse_json
from garagebook.timeutil import utcnow

router = APIRouter(tags=["calendar feeds"])

ADMIN_ACTOR = "admin token"  # who made a feed through the API
_TOKEN_MAX = 128


class FeedIn(_Strict):
    """A feed of the whole garage (no `bay_id`) or of one bay."""

    label: Annotated[OneLine, Field(max_length=100)]
    bay_id: Id | None = None


@router.post(
    "/api/admin/feeds",
    dependencies=[AdminDep],
    status_code=201,
    openapi_extra=json_body(FeedIn),
    responses=error_responses(401, 403, 404, 413, 422, 503),
)
async def post_feed(request: Request, db: DatabaseDep, settings: SettingsDep) -> Response:
    """201 the feed with its `url` (and `token`): shown only in this answer, never again (only
    its hash is kept). Subscribe to the URL in any calendar app."""
    body = await parse_json(request, FeedIn)
    async with db.transaction() as conn:
        feed = await create_feed(
            conn,
            settings,
            label=body.label,
            bay_id=body.bay_id,
            created_by=ADMIN_ACTOR,
            now=utcnow(),
        )
    return private_json(feed, 201)


@router.get("/api/admin/feeds", dependencies=[AdminDep], responses=error_responses(401, 403, 503))
async def get_feeds(db: DatabaseDep) -> Response:
    """Every feed, revoked ones too (`revoked_at`); never their tokens."""
    async with db.read() as conn:
        return private_json(await list_feeds(conn))


@router.delete(
    "/api/admin/feeds/{feed_id}",
    dependencies=[AdminDep],
    responses=error_responses(401, 403, 404, 503),
)
async def delete_feed(feed_id: Id, db: DatabaseDep) -> Response:
    """Revoke: the feed's URL answers 404 from now on. 200 the feed with its `revoked_at`."""
    async with db.transaction() as conn:
        return private_json(await revoke_feed(conn, feed_id, utcnow()))


@router.get(
    "/calendar/{feed_token}.ics",
    responses={200: {"content": {"text/calendar": {}}}, **error_responses(404, 503)},
)
async def get_calendar(feed_token: str, db: DatabaseDep, settings: SettingsDep) -> Response:
    """The feed: upcoming bookings and closed times as iCalendar. 404 for an unknown or revoked
    token."""
    if len(feed_token) > _TOKEN_MAX:
        raise FeedNotFound()
    async with db.read() as conn:
        body = await feed_ics(conn, settings, feed_token, utcnow())
    return Response(
        body,
        media_type="text/calendar; charset=utf-8",
        headers={"Cache-Control": "no-store"},  # it is a list of the garage's customers' cars
    )
