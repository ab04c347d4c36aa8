"""The HTTP ceiling: the same framework and server as garagebook, parsing the same booking
body with the same validation, answering the same 409 — and doing nothing else."""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response

from garagebook.bookings.schemas import BookingIn

app = FastAPI()
CONFLICT = orjson.dumps(
    {
        "error": {
            "code": "slot_unavailable",
            "message": "That time is no longer available.",
            "rejected_by": "reservation",
        }
    }
)


@app.post("/api/bookings")
async def book(request: Request) -> Response:
    BookingIn.model_validate_json(await request.body())
    return Response(CONFLICT, 409, media_type="application/json")
