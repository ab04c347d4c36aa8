"""The owner's settings pages at `/staff/settings/…` (services, bays, technicians, hours and
closed days, booking rules) and the change history every staff member may read.

A page is a view of part of the garage's setup document, never a second way to change it: a
save takes the document in force, replaces the part the page shows with what was posted, and
hands the whole new document to the same apply as `garagebook garage apply` and
`PUT /api/admin/garage` (`garage.apply`). The form's field names are the document's paths
(`services[2].minutes`, `hours.monday`), so every problem the validation names is shown next
to its field. The document is read under a lock on its row, in the apply's transaction: two
owners saving different pages at once both keep their change."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from garagebook.config import Settings
from garagebook.db import Database
from garagebook.deps import DatabaseDep, SettingsDep
from garagebook.errors import (
    DomainError,
    GarageNotSetUp,
    InvalidGarage,
    Problem,
    http_status,
    page_message,
)
from garagebook.garage.apply import ApplyResult, apply_in, current_document, history
from garagebook.garage.document import SLOT_GRID, WEEKDAYS, GarageDocument, parse_json, to_json
from garagebook.schema import garage
from garagebook.timeutil import utcnow
from garagebook.web.auth import OwnerDep, StaffDep, StaffUser
from garagebook.web.forms import form_text, staff_form
from garagebook.web.pages import render

router = APIRouter(prefix="/staff/settings", include_in_schema=False)

Fields = dict[str, str]  # form field (a document path) → its text


@dataclass(frozen=True)
class SettingsPage:
    slug: str
    title: str
    fields: Callable[[dict[str, Any]], Fields]  # the document's part, as form texts
    merge: Callable[[dict[str, Any], FormData, list[Problem]], None]  # the form into the doc


# --- the document's parts as form fields, and back ---------------------------------------------


def _pounds(pence: int) -> str:
    return f"{pence // 100}.{pence % 100:02d}"


def _pence(text: str, path: str, problems: list[Problem]) -> int | str:
    try:
        amount = Decimal(text.removeprefix("£").strip())
    except InvalidOperation:
        amount = Decimal("NaN")
    if not amount.is_finite() or amount < 0 or amount != amount.quantize(Decimal("0.01")):
        problems.append(Problem(path, "a price in pounds, e.g. 54.85"))
        return text
    return int(amount * 100)


def _whole(text: str, path: str, problems: list[Problem]) -> int | str:
    """A whole number typed in a form (the document takes numbers, not text)."""
    if text.isdigit() and len(text) <= 9:
        return int(text)
    problems.append(Problem(path, "a whole number, e.g. 60"))
    return text


def _words(text: str) -> list[str]:
    """A list typed as text: separated by commas, spaces or lines."""
    return [word for word in re.split(r"[\s,;]+", text) if word]


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40]


def _rows(form: FormData, kind: str) -> list[int]:
    """The row numbers a list page posted (`services[0].name`, `services[1].name`, …)."""
    found = {int(m.group(1)) for key in form for m in [re.match(rf"{kind}\[(\d+)\]\.", key)] if m}
    return sorted(found)


def service_fields(data: dict[str, Any]) -> Fields:
    fields: Fields = {}
    for i, s in enumerate(data["services"]):
        fields.update(
            {
                f"services[{i}].key": s["key"],
                f"services[{i}].name": s["name"],
                f"services[{i}].description": s["description"],
                f"services[{i}].minutes": str(s["minutes"]),
                f"services[{i}].price_pence": _pounds(s["price_pence"]),
                f"services[{i}].needs": s["needs"],
                f"services[{i}].active": "on" if s["active"] else "",
            }
        )
    return fields


def merge_services(data: dict[str, Any], form: FormData, problems: list[Problem]) -> None:
    """Posted rows in their order (an existing one by its key, a new one keyed by its name),
    then any service the page did not show (added meanwhile elsewhere), unchanged."""
    by_key = {s["key"]: s for s in data["services"]}
    posted: list[dict[str, Any]] = []
    for row in _rows(form, "services"):
        at = f"services[{row}]"
        name = form_text(form, f"{at}.name")
        key = form_text(form, f"{at}.key") or _slug(name)
        if not key and not name:
            continue  # the empty row for a new service, left empty
        i = len(posted)
        service = {
            **by_key.get(key, {}),
            "key": key,
            "name": name,
            "description": form_text(form, f"{at}.description"),
            "minutes": _whole(form_text(form, f"{at}.minutes"), f"services[{i}].minutes", problems),
            "price_pence": _pence(
                form_text(form, f"{at}.price_pence"), f"services[{i}].price_pence", problems
            ),
            "needs": form_text(form, f"{at}.needs") or "general",
            "active": form_text(form, f"{at}.active") == "on",
        }
        posted.append(service)
    shown = {s["key"] for s in posted}
    data["services"] = posted + [s for s in data["services"] if s["key"] not in shown]


def bay_fields(data: dict[str, Any]) -> Fields:
    fields: Fields = {}
    for i, b in enumerate(data["bays"]):
        fields.update(
            {
                f"bays[{i}].name": b["name"],
                f"bays[{i}].can": ", ".join(b["can"]),
                f"bays[{i}].active": "on" if b["active"] else "",
            }
        )
    return fields


def merge_bays(data: dict[str, Any], form: FormData, problems: list[Problem]) -> None:
    posted: list[dict[str, Any]] = []
    for row in _rows(form, "bays"):
        at = f"bays[{row}]"
        name = form_text(form, f"{at}.name")
        if not name:
            continue
        can = _words(form_text(form, f"{at}.can"))
        posted.append({"name": name, "can": can, "active": form_text(form, f"{at}.active") == "on"})
    shown = {b["name"] for b in posted}
    data["bays"] = posted + [b for b in data["bays"] if b["name"] not in shown]


def technician_fields(data: dict[str, Any]) -> Fields:
    """A technician's week is shown day by day; "own hours" unticked means the garage's."""
    fields: Fields = {}
    for i, t in enumerate(data.get("technicians", [])):
        at = f"technicians[{i}]"
        fields.update(
            {
                f"{at}.name": t["name"],
                f"{at}.skills": ", ".join(t["skills"]),
                f"{at}.own_hours": "on" if "hours" in t else "",
                f"{at}.active": "on" if t["active"] else "",
            }
        )
        week = t.get("hours", data["hours"])
        fields.update({f"{at}.hours.{day}": ", ".join(week.get(day, [])) for day in WEEKDAYS})
    return fields


def merge_technicians(data: dict[str, Any], form: FormData, problems: list[Problem]) -> None:
    """Posted rows in their order, matched by name; then any the page did not show."""
    posted: list[dict[str, Any]] = []
    for row in _rows(form, "technicians"):
        at = f"technicians[{row}]"
        name = form_text(form, f"{at}.name")
        if not name:
            continue  # the empty row for a new technician, left empty
        technician: dict[str, Any] = {
            "name": name,
            "skills": _words(form_text(form, f"{at}.skills")),
            "active": form_text(form, f"{at}.active") == "on",
        }
        if form_text(form, f"{at}.own_hours") == "on":
            technician["hours"] = {
                day: _words(form_text(form, f"{at}.hours.{day}")) for day in WEEKDAYS
            }
        posted.append(technician)
    shown = {t["name"] for t in posted}
    data["technicians"] = posted + [
        t for t in data.get("technicians", []) if t["name"] not in shown
    ]


def hours_fields(data: dict[str, Any]) -> Fields:
    fields = {f"hours.{day}": ", ".join(data["hours"][day]) for day in WEEKDAYS}
    fields["closed"] = "\n".join(data["closed"])
    return fields


def merge_hours(data: dict[str, Any], form: FormData, problems: list[Problem]) -> None:
    data["hours"] = {day: _words(form_text(form, f"hours.{day}")) for day in WEEKDAYS}
    data["closed"] = sorted(set(_words(form_text(form, "closed"))))


_RULES = ("name", "timezone", "slot_minutes", "book_ahead_days", "min_notice_minutes")
_NUMBERS = ("slot_minutes", "book_ahead_days", "min_notice_minutes")


def rule_fields(data: dict[str, Any]) -> Fields:
    return {f"garage.{key}": str(data["garage"][key]) for key in _RULES}


def merge_rules(data: dict[str, Any], form: FormData, problems: list[Problem]) -> None:
    data["garage"] = {key: form_text(form, f"garage.{key}") for key in _RULES}
    for key in _NUMBERS:
        data["garage"][key] = _whole(data["garage"][key], f"garage.{key}", problems)


PAGES = {
    page.slug: page
    for page in (
        SettingsPage("services", "Services", service_fields, merge_services),
        SettingsPage("bays", "Bays", bay_fields, merge_bays),
        SettingsPage("technicians", "Technicians", technician_fields, merge_technicians),
        SettingsPage("hours", "Opening hours and closed days", hours_fields, merge_hours),
        SettingsPage("rules", "Booking rules", rule_fields, merge_rules),
    )
}


def field_of(path: str, fields: Fields) -> str:
    """The form field a problem belongs to: its path, or the nearest enclosing one the page
    has (`hours.monday[1]` → `hours.monday`); "" when none (shown above the form)."""
    while path:
        if path in fields:
            return path
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return ""


# --- the pages ----------------------------------------------------------------------------------


def _render(
    request: Request,
    settings: Settings,
    user: StaffUser,
    page: SettingsPage,
    fields: Fields,
    *,
    result: ApplyResult | None = None,
    problems: list[Problem] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    by_field: dict[str, list[str]] = {}
    for problem in problems or []:
        by_field.setdefault(field_of(problem.path, fields), []).append(
            f"{problem.path}: {problem.message}" if problem.path else problem.message
        )
    zone = settings.timezone
    context = {
        "user": user,
        "page": page,
        "pages": PAGES.values(),
        "fields": fields,
        "rows": _row_count(page.slug, fields),
        "weekdays": WEEKDAYS,
        "slot_grid": SLOT_GRID,
        "problems": by_field,
        "error": error,
        "changes": result.changes if result else None,
        "outside_hours": [
            {
                "id": b.id,
                "reference": b.reference,
                "label": f"{b.starts_at.astimezone(zone):%a %d %b %Y %H:%M}",
                "day": b.starts_at.astimezone(zone).date().isoformat(),
                "reason": b.reason,
            }
            for b in (result.outside_hours if result else [])
        ],
    }
    return render(request, settings, f"settings_{page.slug}.html", context, status_code)


def _row_count(slug: str, fields: Fields) -> int:
    """Rows a list page shows: every one in `fields`, plus an empty one to add a new item."""
    if slug not in ("services", "bays", "technicians"):
        return 0
    return len({key.split("]")[0] for key in fields if key.startswith(f"{slug}[")}) + 1


async def _document(db: Database) -> dict[str, Any]:
    async with db.read() as conn:
        return to_json(await current_document(conn))


@router.get("")
async def settings_index(user: OwnerDep) -> Response:
    return RedirectResponse("/staff/settings/services", 303)


@router.get("/history")
async def history_page(
    request: Request, db: DatabaseDep, settings: SettingsDep, user: StaffDep
) -> Response:
    """Who changed the garage's setup, when, and what: for every staff member to read."""
    async with db.read() as conn:
        changes = await history(conn)
    zone = settings.timezone
    for change in changes:
        change["when"] = f"{change['changed_at'].astimezone(zone):%a %d %b %Y %H:%M}"
    context = {"user": user, "changes": changes, "pages": PAGES.values()}
    return render(request, settings, "settings_history.html", context)


async def _show(
    slug: str, request: Request, db: Database, settings: Settings, user: StaffUser
) -> Response:
    page = PAGES[slug]
    try:
        data = await _document(db)
    except GarageNotSetUp as exc:
        return _render(request, settings, user, page, {}, error=page_message(exc), status_code=404)
    return _render(request, settings, user, page, page.fields(data))


async def _save(
    slug: str, request: Request, db: Database, settings: Settings, user: StaffUser
) -> Response:
    page = PAGES[slug]
    form = await staff_form(request, settings)
    if isinstance(form, Response):
        return form
    typed: Fields = {key: form_text(form, key) for key in form if key != "csrf_token"}
    try:
        async with db.transaction() as conn:
            document = await _new_document(conn, page, form)
            result = await apply_in(conn, document, actor=user.name, now=utcnow())
    except InvalidGarage as exc:
        return _render(request, settings, user, page, typed, problems=exc.problems, status_code=422)
    except DomainError as exc:  # an unsafe change, or no document yet: nothing was applied
        return _render(
            request, settings, user, page, typed, error=exc.message, status_code=http_status(exc)
        )
    return _render(
        request, settings, user, page, page.fields(to_json(result.document)), result=result
    )


async def _new_document(
    conn: AsyncConnection, page: SettingsPage, form: FormData
) -> GarageDocument:
    """The document in force with this page's part replaced by the form; InvalidGarage with
    every problem (the form's own, such as a price that is not one, and the document's)."""
    await conn.execute(select(garage.c.id).where(garage.c.id == 1).with_for_update())
    data = to_json(await current_document(conn))
    problems: list[Problem] = []
    page.merge(data, form, problems)
    try:
        document = parse_json(data)
    except InvalidGarage as exc:
        # The form's own problem about a value says it in its words: not twice.
        mine = {p.path for p in problems}
        raise InvalidGarage(problems + [p for p in exc.problems if p.path not in mine]) from None
    if problems:
        raise InvalidGarage(problems)
    return document


def _routes(slug: str) -> None:
    async def show(
        request: Request, db: DatabaseDep, settings: SettingsDep, user: OwnerDep
    ) -> Response:
        return await _show(slug, request, db, settings, user)

    async def save(
        request: Request, db: DatabaseDep, settings: SettingsDep, user: OwnerDep
    ) -> Response:
        return await _save(slug, request, db, settings, user)

    router.add_api_route(f"/{slug}", show, methods=["GET"], name=f"settings_{slug}")
    router.add_api_route(f"/{slug}", save, methods=["POST"], name=f"save_settings_{slug}")


for _slug_name in PAGES:
    _routes(_slug_name)
