"""The server accepts what its OpenAPI schema says, and refuses what it does not: found by the
schemathesis CLI (`make fuzz`). JSON Schema counts 16950.0 as an integer, so every integer
field of every request body takes an integer-valued number; `format: date` is YYYY-MM-DD, so
`?date=0` (which pydantic would read as a Unix time, 1970-01-01) is a 422."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, ValidationError

from garagebook.app import create_app
from garagebook.bookings.routes import RescheduleIn
from garagebook.bookings.schemas import BookingIn, HoldIn
from garagebook.closures.routes import ClosureIn
from garagebook.feeds.routes import FeedIn
from garagebook.garage.demo import demo_document
from garagebook.garage.document import GarageDocument, to_json
from garagebook.slots.routes import SlotIn
from garagebook.technicians.routes import AbsenceIn, ReassignIn
from garagebook.vehicles.mot import MotIn
from garagebook.waitlist.schemas import WaitlistIn
from garagebook.webhooks.routes import WebhookChange, WebhookIn
from tests.support.api import booking_body, free_slots, open_admin_slot
from tests.support.stack import ADMIN_TOKEN

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
NOT_DATES = ["0", "1700000000", "20261202", "2026-W49-3", "2026-12-02T00:00:00", "2026-13-01"]
NOT_INTEGERS: list[Any] = [1.5, "1", True, None, float("inf")]

# A valid body of every model a route documents as its JSON body. A new body model must be
# added here: `test_every_documented_body_is_covered` fails until it is.
_SOON = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
VALID_BODIES: dict[type[BaseModel], dict[str, Any]] = {
    GarageDocument: to_json(demo_document()),
    BookingIn: booking_body(7),
    HoldIn: {"slot_id": 7, "service_id": 1},
    SlotIn: {
        "bay_id": 1,
        "starts_at": _SOON.isoformat(),
        "ends_at": (_SOON + timedelta(hours=1)).isoformat(),
    },
    RescheduleIn: {"slot_id": 7},
    ClosureIn: {
        "bay_id": 1,
        "starts_at": _SOON.isoformat(),
        "ends_at": (_SOON + timedelta(hours=1)).isoformat(),
        "reason": "ramp service",
    },
    MotIn: {"expires_on": date.today().isoformat()},
    WaitlistIn: {
        "service_id": 1,
        "day": (date.today() + timedelta(days=1)).isoformat(),
        "customer": {"name": "Ada", "email": "ada@example.com"},
        "vehicle": {"registration": "AB12 CDE"},
    },
    FeedIn: {"label": "Workshop", "bay_id": 1},
    WebhookIn: {"url": "https://hooks.example.com/garage", "events": ["booking.created"]},
    WebhookChange: {"enabled": False},
    AbsenceIn: {
        "technician_id": 1,
        "first_day": (date.today() + timedelta(days=1)).isoformat(),
        "last_day": (date.today() + timedelta(days=2)).isoformat(),
        "reason": "holiday",
    },
    ReassignIn: {"technician_id": 1, "bay_id": 1},
}


def _paths_of_type(
    schema: dict[str, Any], defs: dict[str, Any], kind: str, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    """Every property path whose schema is `kind` ("integer", or "date" for format date)."""
    if "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    for option in schema.get("anyOf", []):
        yield from _paths_of_type(option, defs, kind, prefix)
    if schema.get("type") == "integer" and kind == "integer":
        yield prefix
    if schema.get("format") == "date" and kind == "date":
        yield prefix
    for name, sub in schema.get("properties", {}).items():
        yield from _paths_of_type(sub, defs, kind, (*prefix, name))


def _replaced(body: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    copy = {k: (dict(v) if isinstance(v, dict) else v) for k, v in body.items()}
    target = copy
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return copy


def _cases(kind: str) -> list[tuple[type[BaseModel], tuple[str, ...]]]:
    cases = []
    for model in VALID_BODIES:
        schema = model.model_json_schema()
        cases += [(model, p) for p in _paths_of_type(schema, schema.get("$defs", {}), kind)]
    return cases


def test_every_documented_body_is_covered() -> None:
    documented = {
        body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        for path in create_app().openapi()["paths"].values()
        for operation in path.values()
        if (body := operation.get("requestBody"))
    }
    assert documented == {model.__name__ for model in VALID_BODIES}
    # Every integer field of every body is one of the cases below.
    assert {(m.__name__, p) for m, p in _cases("integer")} == {
        ("BookingIn", ("slot_id",)),
        ("BookingIn", ("service_id",)),
        ("HoldIn", ("slot_id",)),
        ("HoldIn", ("service_id",)),
        ("SlotIn", ("bay_id",)),
        ("RescheduleIn", ("slot_id",)),
        ("ClosureIn", ("bay_id",)),
        ("WaitlistIn", ("service_id",)),
        ("GarageDocument", ("garage", "slot_minutes")),
        ("GarageDocument", ("garage", "book_ahead_days")),
        ("GarageDocument", ("garage", "min_notice_minutes")),
        ("FeedIn", ("bay_id",)),
        ("AbsenceIn", ("technician_id",)),
        ("ReassignIn", ("technician_id",)),
        ("ReassignIn", ("bay_id",)),
    }


# Integer fields that are not ids, and their ranges (ids: 1 to 2**31 - 1).
RANGES = {
    ("GarageDocument", ("garage", "slot_minutes")): (15, 60),
    ("GarageDocument", ("garage", "book_ahead_days")): (1, 366),
    ("GarageDocument", ("garage", "min_notice_minutes")): (0, 43200),
}


def test_every_integer_field_documents_its_range() -> None:
    """The range is JSON Schema's `minimum`/`maximum` (pydantic writes a raw `ge`/`le`, which
    no client understands, when the constraint cannot be pushed into the integer schema)."""
    schema = create_app().openapi()["components"]["schemas"]
    for model, path in _cases("integer"):
        owner = schema[model.__name__]
        for part in path[:-1]:  # a nested object: its own component
            owner = schema[owner["properties"][part]["$ref"].rsplit("/", 1)[-1]]
        field = owner["properties"][path[-1]]
        # An optional field (`Id | None`): the integer is one of its `anyOf`.
        field = next((o for o in field.get("anyOf", []) if o.get("type") == "integer"), field)
        expected = RANGES.get((model.__name__, path), (1, 2**31 - 1))
        assert (field["minimum"], field["maximum"]) == expected, (model, path)
        assert not {"ge", "le"} & set(field), (model, path)


@pytest.mark.parametrize(("model", "path"), _cases("integer"))
def test_every_integer_field_takes_an_integral_number(
    model: type[BaseModel], path: tuple[str, ...]
) -> None:
    body = VALID_BODIES[model]
    original = body
    for part in path:
        original = original[part]
    parsed = model.model_validate_json(httpx.Request("POST", "/", json=body).content)
    as_float = _replaced(body, path, float(original))
    accepted = model.model_validate_json(httpx.Request("POST", "/", json=as_float).content)
    assert accepted == parsed
    value: Any = accepted
    for part in path:
        value = getattr(value, part)
    assert type(value) is int


def _nullable(model: type[BaseModel], path: tuple[str, ...]) -> bool:
    """An optional field (`Id | None`, e.g. FeedIn's `bay_id`): null is one of its values."""
    schema = model.model_json_schema()
    owner = schema
    for part in path[:-1]:  # a nested object (GarageDocument's `garage`): its own definition
        owner = schema["$defs"][owner["properties"][part]["$ref"].rsplit("/", 1)[-1]]
    field = owner["properties"][path[-1]]
    return {"type": "null"} in field.get("anyOf", [])


@pytest.mark.parametrize(
    ("model", "path", "bad"),
    [
        (model, path, bad)
        for model, path in _cases("integer")
        for bad in NOT_INTEGERS
        if not (bad is None and _nullable(model, path))
    ],
    ids=repr,
)
def test_every_integer_field_still_refuses_non_integers(
    model: type[BaseModel], path: tuple[str, ...], bad: Any
) -> None:
    # inf is not JSON: sent as Python input, the way the pages build bodies.
    with pytest.raises(ValidationError):
        model.model_validate(_replaced(VALID_BODIES[model], path, bad))
    if bad != float("inf"):
        raw = httpx.Request("POST", "/", json=_replaced(VALID_BODIES[model], path, bad)).content
        with pytest.raises(ValidationError):
            model.model_validate_json(raw)


@pytest.mark.parametrize(("model", "path"), _cases("date"))
@pytest.mark.parametrize("bad", NOT_DATES)
def test_every_date_field_is_strictly_iso(
    model: type[BaseModel], path: tuple[str, ...], bad: str
) -> None:
    body = BODY_FOR.get((model.__name__, path), VALID_BODIES[model])
    model.model_validate_json(httpx.Request("POST", "/", json=body).content)  # valid as it is
    raw = httpx.Request("POST", "/", json=_replaced(body, path, bad)).content
    with pytest.raises(ValidationError):
        model.model_validate_json(raw)


def test_the_date_cases_cover_every_date_field() -> None:
    assert {(m.__name__, p) for m, p in _cases("date")} == {
        ("MotIn", ("expires_on",)),
        ("WaitlistIn", ("day",)),
        ("AbsenceIn", ("first_day",)),
        ("AbsenceIn", ("last_day",)),
        ("BookingIn", ("day",)),
        ("RescheduleIn", ("day",)),
    }


# A field that excludes another of the valid body's: its own valid body (a drop-off by day).
_DROP_OFF = {k: v for k, v in booking_body(7).items() if k != "slot_id"}
BODY_FOR = {
    ("BookingIn", ("day",)): {**_DROP_OFF, "day": (date.today() + timedelta(days=2)).isoformat()},
    ("RescheduleIn", ("day",)): {"day": (date.today() + timedelta(days=2)).isoformat()},
}


# --- through the API, on both stacks -------------------------------------------------------


@pytest.mark.parametrize("bad", NOT_DATES)
async def test_slots_refuse_a_date_that_is_not_yyyy_mm_dd(api: httpx.AsyncClient, bad: str) -> None:
    response = await api.get("/api/slots", params={"date": bad})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"


async def test_slots_still_take_an_iso_date(api: httpx.AsyncClient) -> None:
    day = (await free_slots(api))[0]["starts_at"][:10]
    response = await api.get("/api/slots", params={"date": day})
    assert response.status_code == 200
    assert response.json()
    assert {slot["starts_at"][:10] for slot in response.json()} == {day}


async def test_integral_floats_are_accepted_by_every_body_route(api: httpx.AsyncClient) -> None:
    first, second, third = (await free_slots(api))[:3]
    hold = await api.post("/api/holds", json={"slot_id": float(first["id"]), "service_id": 1.0})
    assert hold.status_code == 201, hold.text
    assert hold.json()["slot_ids"] == [first["id"]]

    booked = await api.post(
        "/api/bookings",
        json=booking_body(float(second["id"]), service_id=1.0),  # type: ignore[arg-type]
    )
    assert booked.status_code == 201, booked.text
    booking = booked.json()
    assert (booking["slot_id"], booking["service_id"]) == (second["id"], 1)

    moved = await api.post(
        f"/api/bookings/{booking['id']}/reschedule",
        json={"slot_id": float(third["id"])},
        headers=AUTH,
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["slot_id"] == third["id"]

    moved_back = await api.post(
        f"/api/manage/{booking['cancel_token']}/reschedule", json={"slot_id": 1.0 * second["id"]}
    )
    assert moved_back.status_code == 200, moved_back.text

    start = (datetime.now(UTC) + timedelta(days=40)).replace(minute=0, second=0, microsecond=0)
    slot = await api.post(
        "/api/admin/slots",
        json={
            "bay_id": 1.0,
            "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(hours=1)).isoformat(),
        },
        headers=AUTH,
    )
    assert slot.status_code == 201, slot.text
    assert slot.json()["bay_id"] == 1

    joined = await api.post(
        "/api/waitlist",
        json={**VALID_BODIES[WaitlistIn], "service_id": 1.0},
    )
    assert joined.status_code == 201, joined.text
    assert joined.json()["service_id"] == 1


@pytest.mark.parametrize("bad", [1.5, "1", True])
async def test_non_integers_are_still_refused_by_the_api(api: httpx.AsyncClient, bad: Any) -> None:
    slot = (await free_slots(api))[0]
    for path, body in [
        ("/api/holds", {"slot_id": slot["id"], "service_id": bad}),
        ("/api/bookings", booking_body(slot["id"], service_id=bad)),
    ]:
        response = await api.post(path, json=body)
        assert response.status_code == 422, (path, response.text)
    admin = await api.post(
        "/api/admin/slots",
        json={**VALID_BODIES[SlotIn], "bay_id": bad},
        headers=AUTH,
    )
    assert admin.status_code == 422, admin.text


async def test_an_idempotent_retry_with_a_float_id_is_the_same_request(
    api: httpx.AsyncClient,
) -> None:
    slot_id = await open_admin_slot(api, datetime.now(UTC) + timedelta(days=41))
    headers = {"Idempotency-Key": "float-retry"}
    first = await api.post("/api/bookings", json=booking_body(slot_id), headers=headers)
    again = await api.post(
        "/api/bookings",
        json=booking_body(float(slot_id)),  # type: ignore[arg-type]
        headers=headers,
    )
    assert first.status_code == again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]


@pytest.mark.parametrize(
    ("starts_at", "ends_at"),
    [
        ("0001-01-01T00:00:01+01:00", "0001-01-01T00:00:00Z"),  # found by the CLI: was a 500
        ("9999-12-31T23:00:00Z", "9999-12-31T23:30:00-01:00"),
    ],
)
async def test_a_slot_time_with_no_utc_year_is_a_422(
    api: httpx.AsyncClient, starts_at: str, ends_at: str
) -> None:
    response = await api.post(
        "/api/admin/slots",
        json={"bay_id": 1, "starts_at": starts_at, "ends_at": ends_at},
        headers=AUTH,
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"
