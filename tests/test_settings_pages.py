"""The owner's settings pages (issue 14) through HTTP, on both stacks: each form shows the
document in force; a save applies the whole new document through the same apply as the CLI
and the API, and shows what changed and the bookings left outside the hours; an invalid save
shows every problem next to its field with a 422 and applies nothing. The change history is
for every staff member."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from garagebook.garage.apply import current_document, history
from garagebook.garage.document import GarageDocument
from garagebook.schema import slots
from garagebook.slots.service import local_day_bounds
from garagebook.web.auth import OWNER, STAFF
from tests.support.api import booking_body, free_slots
from tests.test_staff_roles import add_account, sign_in_as
from tests.test_web_pages import csrf_of


class _FormReader(HTMLParser):
    """The fields of the page's `#settings-form` as a browser would post them."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}
        self._in_form = False
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self._in_form = a.get("id") == "settings-form"
        if not self._in_form or not a.get("name"):
            if tag == "option" and self._select and "selected" in a:
                self.fields[self._select] = a.get("value") or ""
            return
        name = a["name"] or ""
        if tag == "input":
            if a.get("type") == "checkbox":
                if "checked" in a:
                    self.fields[name] = "on"
            else:
                self.fields[name] = a.get("value") or ""
        elif tag == "select":
            self._select = name
        elif tag == "textarea":
            self._textarea = name
            self.fields[name] = ""

    def handle_data(self, data: str) -> None:
        if self._textarea:
            self.fields[self._textarea] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None


def form_of(html: str) -> dict[str, str]:
    reader = _FormReader()
    reader.feed(html)
    assert reader.fields, "the page has its settings form"
    return reader.fields


async def document(app: FastAPI) -> GarageDocument:
    async with app.state.db.read() as conn:
        return await current_document(conn)


async def history_rows(app: FastAPI) -> list[dict[str, Any]]:
    async with app.state.db.read() as conn:
        return await history(conn)


async def open_starts(app: FastAPI, day: date) -> set[str]:
    """The local start hours of the day's open slots (the calendar the apply keeps)."""
    zone = app.state.settings.timezone
    start, end = local_day_bounds(day, zone)
    async with app.state.db.read() as conn:
        rows = await conn.execute(
            select(slots.c.starts_at).where(
                slots.c.open, slots.c.starts_at >= start, slots.c.starts_at < end
            )
        )
        return {f"{r.starts_at.astimezone(zone):%H}" for r in rows}


async def owner(app: FastAPI, api: httpx.AsyncClient) -> None:
    await add_account(app, "olga", OWNER)
    await sign_in_as(api, "olga")


async def save(api: httpx.AsyncClient, slug: str, changes: dict[str, str]) -> httpx.Response:
    """Open the page, change some fields as a person would, and save the form."""
    page = await api.get(f"/staff/settings/{slug}")
    assert page.status_code == 200, page.text
    fields = form_of(page.text)
    fields.update(changes)
    for name in [name for name, value in changes.items() if value is None]:
        fields.pop(name)
    return await api.post(f"/staff/settings/{slug}", data=fields)


async def test_every_page_shows_the_document_in_force(app: FastAPI, api: httpx.AsyncClient) -> None:
    await owner(app, api)
    doc = await document(app)
    services = form_of((await api.get("/staff/settings/services")).text)
    assert services["services[0].key"] == doc.services[0].key
    assert services["services[0].name"] == doc.services[0].name
    assert services["services[0].price_pence"] == "54.85"
    assert services["services[0].active"] == "on"
    assert services[f"services[{len(doc.services)}].name"] == ""  # the row to add one
    bays = form_of((await api.get("/staff/settings/bays")).text)
    assert bays["bays[0].name"] == "Bay 1"
    assert bays["bays[0].can"] == "general"
    hours = form_of((await api.get("/staff/settings/hours")).text)
    assert hours["hours.monday"] == "08:00-17:00"
    assert hours["hours.sunday"] == ""
    rules = form_of((await api.get("/staff/settings/rules")).text)
    assert rules["garage.slot_minutes"] == str(doc.garage.slot_minutes)
    assert rules["garage.timezone"] == "Europe/London"
    index = await api.get("/staff/settings")
    assert index.status_code == 303


def _next(weekday: int) -> date:
    today = date.today()
    return today + timedelta(days=(weekday - today.weekday()) % 7 or 7)


async def test_hours_with_a_break_and_a_closed_day_are_applied_and_recorded(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    await owner(app, api)
    monday, tuesday = _next(0), _next(1)
    saved = await save(
        api,
        "hours",
        {"hours.monday": "08:00-12:00, 13:00-17:00", "closed": tuesday.isoformat()},
    )
    assert saved.status_code == 200, saved.text
    assert "hours.monday: 08:00-17:00 → 08:00-12:00, 13:00-17:00" in saved.text
    assert f"closed: {tuesday} added" in saved.text
    doc = await document(app)
    assert doc.hours.monday == ["08:00-12:00", "13:00-17:00"]
    assert doc.closed == [tuesday]
    # The calendar follows: Monday's 12:00 slots and the closed Tuesday's are closed.
    assert await open_starts(app, monday) == {"08", "09", "10", "11", "13", "14", "15", "16"}
    assert await open_starts(app, tuesday) == set()
    # And so do the free times offered.
    offered = await api.get("/api/slots", params={"date": monday.isoformat(), "available": "true"})
    starts = {s["starts_at"][11:13] for s in offered.json()}
    assert starts == {"08", "09", "10", "11", "13", "14", "15", "16"}
    closed = await api.get("/api/slots", params={"date": tuesday.isoformat(), "available": "true"})
    assert closed.json() == []
    # The history says who and what, to every staff member.
    latest = (await history_rows(app))[0]
    assert latest["actor"] == "olga"
    await add_account(app, "sam", STAFF)
    async with httpx.AsyncClient(transport=api._transport, base_url=str(api.base_url)) as sam:
        await sign_in_as(sam, "sam")
        shown = await sam.get("/staff/settings/history")
        assert shown.status_code == 200
        assert "olga" in shown.text
        assert "hours.monday" in shown.text


async def test_an_invalid_save_shows_every_problem_by_its_field_and_applies_nothing(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    await owner(app, api)
    before = (await document(app)).canonical()
    recorded = len(await history_rows(app))
    # The document's rules between values are checked once every value has its shape: a
    # backwards range and a date that does not exist, then an overlap and an off-grid time.
    bad_shapes = await save(api, "hours", {"hours.monday": "12:00-09:00", "closed": "2027-02-30"})
    assert bad_shapes.status_code == 422
    for field in ("hours.monday", "closed"):
        assert f'data-for="{field}"' in bad_shapes.text, field
    assert "ends before it starts" in bad_shapes.text
    assert 'value="12:00-09:00"' in bad_shapes.text  # what was typed is kept
    bad_rules_of_hours = await save(
        api,
        "hours",
        {"hours.tuesday": "08:00-12:00, 11:00-13:00", "hours.wednesday": "08:15-12:00"},
    )
    assert bad_rules_of_hours.status_code == 422
    for field in ("hours.tuesday", "hours.wednesday"):
        assert f'data-for="{field}"' in bad_rules_of_hours.text, field
    assert "overlaps" in bad_rules_of_hours.text
    bad_services = await save(
        api, "services", {"services[1].price_pence": "a lot", "services[2].name": ""}
    )
    assert bad_services.status_code == 422
    for field in ("services[1].price_pence", "services[2].name"):
        assert f'data-for="{field}"' in bad_services.text, field
    off_grid = await save(
        api, "services", {"services[0].minutes": "45", "services[3].needs": "mot"}
    )
    assert off_grid.status_code == 422
    for field in ("services[0].minutes", "services[3].needs"):
        assert f'data-for="{field}"' in off_grid.text, field
    bad_rules = await save(
        api, "rules", {"garage.timezone": "Mars/Olympus", "garage.book_ahead_days": "soon"}
    )
    assert bad_rules.status_code == 422
    assert 'data-for="garage.timezone"' in bad_rules.text
    assert 'data-for="garage.book_ahead_days"' in bad_rules.text
    assert (await document(app)).canonical() == before
    assert len(await history_rows(app)) == recorded


async def test_services_are_edited_added_and_retired(app: FastAPI, api: httpx.AsyncClient) -> None:
    await owner(app, api)
    doc = await document(app)
    new = len(doc.services)
    saved = await save(
        api,
        "services",
        {
            "services[0].price_pence": "60.00",
            "services[0].description": "The yearly test",
            "services[1].active": None,  # unticked: retired
            f"services[{new}].name": "Tyre fitting",
            f"services[{new}].minutes": "60",
            f"services[{new}].price_pence": "25",
        },
    )
    assert saved.status_code == 200, saved.text
    listed = {s["name"]: s for s in (await api.get("/api/services")).json()}
    assert listed["MOT"]["price_pence"] == 6000
    assert listed["Tyre fitting"]["price_pence"] == 2500
    assert doc.services[1].name not in listed  # retired: no longer offered
    after = await document(app)
    assert after.services[1].active is False  # retired: kept, never deleted
    assert any(s.key == "tyre-fitting" for s in after.services)


async def test_bays_are_added_given_capabilities_and_retired(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    await owner(app, api)
    saved = await save(
        api,
        "bays",
        {
            "bays[0].can": "general, mot",
            "bays[2].active": None,
            "bays[3].name": "Bay 4",
            "bays[3].can": "general",
            "bays[3].active": "on",
        },
    )
    assert saved.status_code == 200, saved.text
    bays = {b.name: b for b in (await document(app)).bays}
    assert bays["Bay 1"].can == ["general", "mot"]
    assert bays["Bay 3"].active is False
    assert bays["Bay 4"].active is True


async def test_rules_are_saved_and_an_unsafe_change_is_refused_with_why(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    await owner(app, api)
    saved = await save(
        api,
        "rules",
        {"garage.name": "Smith & Sons Motors", "garage.min_notice_minutes": "120"},
    )
    assert saved.status_code == 200, saved.text
    doc = await document(app)
    assert doc.garage.name == "Smith & Sons Motors"
    assert doc.garage.min_notice_minutes == 120
    slot = (await free_slots(api))[-1]
    booked = await api.post("/api/bookings", json=booking_body(slot["id"]))
    assert booked.status_code == 201, booked.text
    unsafe = await save(api, "rules", {"garage.slot_minutes": "30"})
    assert unsafe.status_code == 409
    assert "while future confirmed bookings exist" in unsafe.text
    assert (await document(app)).garage.slot_minutes == 60


async def test_a_booking_left_outside_the_hours_is_listed_with_links(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    await owner(app, api)
    slots = [s for s in await free_slots(api) if s["starts_at"][11:16] == "16:00"]
    booked = await api.post("/api/bookings", json=booking_body(slots[-1]["id"]))
    assert booked.status_code == 201, booked.text
    booking = booked.json()
    weekday = datetime.fromisoformat(booking["starts_at"]).strftime("%A").lower()
    saved = await save(api, "hours", {f"hours.{weekday}": "08:00-12:00"})
    assert saved.status_code == 200, saved.text
    assert 'id="outside-hours"' in saved.text
    assert booking["reference"] in saved.text
    assert f'href="/staff/bookings/{booking["id"]}/move' in saved.text
    kept = await api.get(
        f"/api/bookings/{booking['id']}", headers={"Authorization": "Bearer test-admin-token"}
    )
    assert kept.json()["status"] == "confirmed"


async def test_a_save_without_a_valid_csrf_token_applies_nothing(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    await owner(app, api)
    fields = form_of((await api.get("/staff/settings/hours")).text)
    fields["hours.monday"] = "09:00-10:00"
    fields["csrf_token"] = "forged"
    refused = await api.post("/staff/settings/hours", data=fields)
    assert refused.status_code == 403
    assert (await document(app)).hours.monday == ["08:00-17:00"]
    assert csrf_of((await api.get("/staff/settings/hours")).text)


async def test_technicians_are_added_given_hours_and_retired_by_the_owner_only(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    await owner(app, api)
    page = form_of((await api.get("/staff/settings/technicians")).text)
    assert page["technicians[0].name"] == ""  # the demo lists none: only the row to add one
    added = await save(
        api,
        "technicians",
        {
            "technicians[0].name": "Priya",
            "technicians[0].skills": "mot_tester, general",
            "technicians[0].own_hours": "on",
            "technicians[0].hours.monday": "08:00-12:00, 13:00-16:00",
            "technicians[0].hours.tuesday": "",
            "technicians[0].active": "on",
        },
    )
    assert added.status_code == 200, added.text
    priya = (await document(app)).technicians[0]
    assert (priya.name, priya.skills, priya.active) == ("Priya", ["mot_tester", "general"], True)
    assert priya.hours is not None
    assert priya.hours.monday == ["08:00-12:00", "13:00-16:00"]
    assert priya.hours.tuesday == []  # left empty: a day off
    shown = form_of((await api.get("/staff/settings/technicians")).text)
    assert shown["technicians[0].hours.monday"] == "08:00-12:00, 13:00-16:00"
    assert shown["technicians[1].name"] == ""
    # A second on the garage's hours; a bad range is shown next to its field, nothing applied.
    before = (await document(app)).canonical()
    bad = await save(
        api,
        "technicians",
        {"technicians[0].hours.monday": "08:00-12:00, 11:00-13:00", "technicians[1].name": "Tom"},
    )
    assert bad.status_code == 422
    assert 'data-for="technicians[0].hours.monday"' in bad.text
    assert "overlaps" in bad.text
    assert (await document(app)).canonical() == before
    garage_hours = await save(
        api,
        "technicians",
        {"technicians[1].name": "Tom", "technicians[1].skills": "general"},
    )
    assert garage_hours.status_code == 200, garage_hours.text
    tom = (await document(app)).technicians[1]
    assert tom.hours is None  # "own hours" unticked: the garage's
    # The only MOT tester retired while a service needs the skill: named by its path.
    retired = await save(api, "technicians", {"technicians[0].active": None})
    assert retired.status_code == 200, retired.text  # no service needs mot_tester yet
    assert (await document(app)).technicians[0].active is False
    await add_account(app, "sam", STAFF)
    async with httpx.AsyncClient(transport=api._transport, base_url=str(api.base_url)) as sam:
        await sign_in_as(sam, "sam")
        refused = await sam.get("/staff/settings/technicians")
        assert refused.status_code in (303, 403)
