"""A deliberately broken booking server for the concurrency test's own test: it checks
nothing, so the first two bookings of a slot both get 201. The gate must catch it."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

SLOT = {
    "id": 1,
    "bay_id": 1,
    "starts_at": "2030-01-07T09:00:00+00:00",
    "ends_at": "2030-01-07T10:00:00+00:00",
    "available": True,
}
booked: list[int] = []


async def health(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "database": "ok", "reservations": "ok"})


async def services(_: Request) -> JSONResponse:
    return JSONResponse([{"id": 1, "name": "MOT", "duration_minutes": 60, "price_pence": 5485}])


async def slots(_: Request) -> JSONResponse:
    return JSONResponse([{**SLOT, "available": not booked}])


async def book(request: Request) -> JSONResponse:
    await request.body()
    booked.append(1)
    if len(booked) <= 2:  # the bug: no constraint, a second booking slips through
        return JSONResponse({"id": f"b{len(booked)}", "status": "confirmed"}, status_code=201)
    error = {"code": "slot_unavailable", "message": "taken", "rejected_by": "database"}
    return JSONResponse({"error": error}, status_code=409)


app = Starlette(
    routes=[
        Route("/health", health),
        Route("/api/services", services),
        Route("/api/slots", slots),
        Route("/api/bookings", book, methods=["POST"]),
    ]
)
