"""`GET/PUT /api/admin/garage` and `GET /api/admin/garage/history` (admin token): the setup
document as JSON, the same one the TOML file and the CLI carry."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from garagebook.config import Settings
from garagebook.deps import AdminDep, DatabaseDep, SettingsDep
from garagebook.errors import InvalidGarage, Problem, UnsupportedMediaType
from garagebook.garage.apply import (
    ApplyResult,
    apply_document,
    current_document,
    history,
    refuse_other_zone,
)
from garagebook.garage.document import GarageDocument, parse_json, to_json
from garagebook.http import error_responses, is_json, json_body, json_response
from garagebook.timeutil import to_local_iso

router = APIRouter(prefix="/api/admin/garage", tags=["garage"], dependencies=[AdminDep])


def result_json(result: ApplyResult, settings: Settings) -> dict[str, Any]:
    return {
        "garage": to_json(result.document),
        "changes": result.changes,
        "outside_hours": [
            {
                "id": b.id,
                "reference": b.reference,
                "starts_at": to_local_iso(b.starts_at, settings.timezone),
                "reason": b.reason,
            }
            for b in result.outside_hours
        ],
    }


@router.get("", responses=error_responses(401, 403, 404, 503))
async def get_garage(db: DatabaseDep) -> Response:
    """The setup document in force."""
    async with db.read() as conn:
        document = await current_document(conn)
    return json_response(to_json(document))


@router.put(
    "",
    openapi_extra=json_body(GarageDocument),
    responses=error_responses(401, 403, 409, 413, 422, 503),
)
async def put_garage(request: Request, db: DatabaseDep, settings: SettingsDep) -> Response:
    """Apply a whole setup document, all or nothing: 200 with what changed and the future
    bookings now outside the hours (kept, confirmed); 422 `invalid_garage` listing every
    problem; 409 `unsafe_garage_change` for a new slot length or time zone under future
    bookings. Nothing is applied unless everything is."""
    if not is_json(request.headers.get("content-type")):
        raise UnsupportedMediaType()
    try:
        data = orjson.loads(await request.body())
    except orjson.JSONDecodeError as error:
        raise InvalidGarage([Problem("", f"not valid JSON: {error}")]) from None
    document = parse_json(data)
    refuse_other_zone(document, settings)
    result = await apply_document(db, document, actor="admin token")
    return json_response(result_json(result, settings))


@router.get("/history", responses=error_responses(401, 403, 503))
async def get_history(db: DatabaseDep, settings: SettingsDep) -> Response:
    """Every recorded change, newest first: version, when, who, what (readable lines)."""
    async with db.read() as conn:
        changes = await history(conn)
    return json_response(
        [{**c, "changed_at": to_local_iso(c["changed_at"], settings.timezone)} for c in changes]
    )
