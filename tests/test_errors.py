"""One mapping for every domain error, for the API and the pages alike (errors.ANSWERS): each
error class has a status, a code and a page message, a subclass answers as its parent, and
the pages show what the mapping says, never a hand-made guess."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

import garagebook
from garagebook import errors
from garagebook.bookings import service as booking_service
from garagebook.errors import (
    ANSWERS,
    UNMAPPED,
    BookingNotFound,
    DomainError,
    InvalidRequest,
    SlotUnavailable,
    answer_for,
    page_message,
)
from tests.support.api import booking_body, free_slots, open_admin_slot
from tests.support.stack import ADMIN_TOKEN
from tests.test_web_pages import add_staff, csrf_of, sign_in

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _every_module() -> Iterator[str]:
    for module in pkgutil.walk_packages(garagebook.__path__, "garagebook."):
        if not module.name.startswith("garagebook.migrations"):  # Alembic's, run by Alembic
            yield module.name


def _subclasses(cls: type[DomainError]) -> Iterator[type[DomainError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def every_domain_error() -> list[type[DomainError]]:
    for name in _every_module():
        importlib.import_module(name)  # a module's errors exist once it is imported
    return [cls for cls in _subclasses(DomainError) if cls.__module__.startswith("garagebook.")]


def test_every_domain_error_has_a_status_a_code_and_a_page_message() -> None:
    found = every_domain_error()
    assert len(found) >= len(ANSWERS)  # the walk sees at least the mapped ones
    for cls in found:
        answer = answer_for(cls)
        assert answer is not UNMAPPED, f"{cls.__name__} has no row in errors.ANSWERS"
        assert 400 <= answer.status <= 599, cls
        assert cls.code not in ("", DomainError.code), f"{cls.__name__} has no code"
        assert answer.page.strip(), cls
        assert answer.key, cls


def test_page_keys_are_unique_and_lead_back_to_their_message() -> None:
    keys = [answer_for(cls).key for cls in ANSWERS]
    assert len(keys) == len(set(keys))
    assert max(len(key) for key in keys) <= 20  # the staff and vehicle pages' `error` limit
    for cls in ANSWERS:
        assert errors.page_message_for_key(answer_for(cls).key) == answer_for(cls).page
    assert errors.page_message_for_key("no-such-key") is None
    assert errors.page_message_for_key(None) is None


class _NewKindOfTaken(SlotUnavailable):
    """A subclass added later without a row of its own."""


class _NewKindOfMissing(BookingNotFound):
    code = "booking_gone"


def test_a_subclass_without_a_row_answers_as_its_parent() -> None:
    assert errors.http_status(_NewKindOfTaken("database")) == 409
    assert errors.http_status(_NewKindOfMissing()) == 404
    assert errors.page_message(_NewKindOfMissing()) == ANSWERS[BookingNotFound].page
    assert errors.http_status(errors.ServiceDoesNotFit()) == 409
    assert errors.page_key(errors.ServiceDoesNotFit()) != errors.page_key(
        SlotUnavailable("database")
    )


async def test_the_api_answers_a_subclass_as_its_parent(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refused(*_: Any, **__: Any) -> Any:
        raise _NewKindOfTaken("database")

    async def missing(*_: Any, **__: Any) -> Any:
        raise _NewKindOfMissing()

    slot = (await free_slots(api))[0]
    monkeypatch.setattr(booking_service, "book", refused)
    response = await api.post("/api/bookings", json=booking_body(slot["id"]))
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "slot_unavailable"
    monkeypatch.setattr(booking_service, "get_booking", missing)
    response = await api.get("/api/bookings/some-booking", headers=AUTH)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "booking_gone"


# --- the pages ---------------------------------------------------------------------------------


async def _staff_page(api: httpx.AsyncClient, app: FastAPI) -> str:
    await add_staff(app)
    assert (await sign_in(api)).status_code == 303
    page = await api.get("/staff")
    assert page.status_code == 200
    return csrf_of(page.text)


async def test_staff_cancel_of_a_completed_booking_says_it_is_done(
    api: httpx.AsyncClient, app: FastAPI
) -> None:
    csrf = await _staff_page(api, app)
    slot = (await free_slots(api))[0]
    booking = (await api.post("/api/bookings", json=booking_body(slot["id"]))).json()
    done = await api.post(f"/api/bookings/{booking['id']}/complete", headers=AUTH)
    assert done.status_code == 200, done.text
    day = booking["starts_at"][:10]
    refused = await api.post(
        f"/staff/bookings/{booking['id']}/cancel", data={"date": day, "csrf_token": csrf}
    )
    assert refused.status_code == 303
    page = (await api.get(refused.headers["location"])).text
    assert "That booking is done (marked completed)" in page
    assert "Some details were not valid" not in page


async def test_staff_close_any_slot_and_a_taken_one_says_so(
    api: httpx.AsyncClient, app: FastAPI
) -> None:
    csrf = await _staff_page(api, app)
    start = (datetime.now(UTC) + timedelta(days=30)).replace(minute=0, second=0, microsecond=0)
    half_hour = await api.post(
        "/api/admin/slots",
        json={
            "bay_id": 1,
            "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(minutes=30)).isoformat(),
        },
        headers=AUTH,
    )
    assert half_hour.status_code == 201, half_hour.text
    day = half_hour.json()["starts_at"][:10]
    closed = await api.post(
        f"/staff/slots/{half_hour.json()['id']}/close", data={"date": day, "csrf_token": csrf}
    )
    # A closure closes the slot itself, whatever the services' lengths (a placeholder
    # booking of the shortest service could not close a half-hour slot: "no_fit").
    assert closed.headers["location"] == f"/staff?date={day}&done=closed"
    taken_slot = await open_admin_slot(api, start + timedelta(hours=2))
    assert (await api.post("/api/bookings", json=booking_body(taken_slot))).status_code == 201
    closed = await api.post(
        f"/staff/slots/{taken_slot}/close", data={"date": day, "csrf_token": csrf}
    )
    assert closed.headers["location"] == f"/staff?date={day}&error=taken"
    page = (await api.get(closed.headers["location"])).text
    assert "That time is no longer free" in page


async def test_a_bug_in_the_booking_path_is_not_shown_as_invalid_details(
    api: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Catching every ValueError around `book` disguised bugs as "Some details were not
    valid"; a bug is a 500 (logged), as in the API. (The app answers 500 and re-raises, so
    the in-process test transport raises it here.)"""
    csrf = await _staff_page(api, app)
    slot = (await free_slots(api))[0]

    async def broken(*_: Any, **__: Any) -> Any:
        raise ValueError("a bug")

    monkeypatch.setattr(booking_service, "book", broken)
    form = {
        "date": slot["starts_at"][:10],
        "csrf_token": csrf,
        "slot_id": str(slot["id"]),
        "service_id": "1",
        "name": "Walk In",
        "registration": "AB12 CDE",
    }
    with pytest.raises(ValueError, match="a bug"):
        await api.post("/staff/walk-in", data=form)
    monkeypatch.undo()
    # A field that is not a number is the API's 422, shown with what was typed kept.
    response = await api.post("/staff/walk-in", data={**form, "slot_id": "not a number"})
    assert response.status_code == 422
    assert page_message(InvalidRequest()) in response.text
    assert 'value="Walk In"' in response.text


async def test_waitlist_join_for_an_unknown_service_is_a_404_page(api: httpx.AsyncClient) -> None:
    day = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    page = await api.get("/waitlist/join", params={"service": 1, "day": day})
    csrf = csrf_of(page.text)
    response = await api.post(
        "/waitlist/join",
        data={
            "csrf_token": csrf,
            "service_id": "999999",
            "day": day,
            "name": "Ada",
            "email": "ada@example.com",
            "registration": "AB12 CDE",
        },
    )
    assert response.status_code == 404, response.text
    assert "That service is not offered" in response.text


async def test_a_manage_page_cancel_that_the_database_refuses_is_its_own_status(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any domain error a page does not handle itself answers with the mapping's status and
    page message, not a blanket 503."""
    slot = (await free_slots(api))[0]
    booking = (await api.post("/api/bookings", json=booking_body(slot["id"]))).json()
    token = booking["cancel_token"]
    page = await api.get(f"/manage/{token}/cancel")
    csrf = csrf_of(page.text)

    async def limited(*_: Any, **__: Any) -> Any:
        raise errors.IdempotencyKeyReused()

    monkeypatch.setattr(booking_service, "cancel", limited)
    response = await api.post(f"/manage/{token}/cancel", data={"csrf_token": csrf})
    assert response.status_code == 422, response.text
    assert ANSWERS[errors.IdempotencyKeyReused].page in response.text
