"""The garage's setup document: one validated description of services, bays, hours, closed days
and booking rules (DESIGN.md, "The garage's own setup"). The same model is read from TOML
(`parse_toml`, the CLI), from JSON (`parse_json`, `PUT /api/admin/garage`) and written back
(`to_toml`, `to_json`), so the three doors cannot disagree.

Validation names every problem with its path (`hours.monday[1]`, `services[2].minutes`) and, for
TOML, its line: a garage fixing its file needs the whole list at once, not one error per try.
Every level forbids unknown keys, because a typo silently ignored is a setting silently lost.
Problems come in two passes: the shape of each value (pydantic), then, once every value has a
valid shape, the rules between them (overlaps, the slot grid, duplicates, capabilities)."""

from __future__ import annotations

import json
import re
import tomllib
from datetime import date, time, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from garagebook.errors import InvalidGarage, Problem
from garagebook.fields import IsoDate, integral

__all__ = [
    "WEEKDAYS",
    "Bay",
    "DropOff",
    "GarageDocument",
    "GarageSection",
    "Hours",
    "InvalidGarage",
    "Problem",
    "Service",
    "Technician",
    "parse_json",
    "parse_toml",
    "to_json",
    "to_toml",
]

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
SLOT_GRID = (15, 20, 30, 60)
# A service covers at most this many back-to-back slots (slots.service.MAX_SLOTS_PER_SERVICE).
MAX_SLOTS_PER_SERVICE = 32
_RANGE = re.compile(r"^(\d\d):(\d\d)-(\d\d):(\d\d)$")
_KEY = r"^[a-z0-9][a-z0-9_-]{0,39}$"
_CLOCK = re.compile(r"^(\d\d):(\d\d)$")


def _parse_range(text: str) -> str:
    """ "HH:MM-HH:MM" within one day; "24:00" may end it. Kept as text: the document round-trips."""
    match = _RANGE.match(text)
    if match is None:
        raise ValueError('a time range is "HH:MM-HH:MM", e.g. "08:00-12:30"')
    sh, sm, eh, em = (int(g) for g in match.groups())
    if sh > 23 or sm > 59 or eh > 24 or em > 59 or (eh == 24 and em != 0):
        raise ValueError(f"{text!r} is not a time of day (00:00 to 24:00)")
    if (eh, em) <= (sh, sm):
        raise ValueError(f"{text!r} ends before it starts")
    return text


def _parse_clock(text: str) -> str:
    """ "HH:MM", a time of day (00:00 to 23:59). Kept as text: the document round-trips."""
    match = _CLOCK.match(text)
    if match is None or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise ValueError('a time of day is "HH:MM", e.g. "16:30"')
    return text


def _check_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use a name like 'Europe/London')") from None
    return name


def _check_slot_minutes(minutes: int) -> int:
    if minutes not in SLOT_GRID:
        raise ValueError(f"slot_minutes must be one of {', '.join(map(str, SLOT_GRID))}")
    return minutes


TimeRange = Annotated[str, AfterValidator(_parse_range)]
Clock = Annotated[str, AfterValidator(_parse_clock)]
DayHours = list[TimeRange]


class _Strict(BaseModel):
    """Strict like every request body (fields.py): "60" is not a number, true not an integer."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# Integer fields in a range that take 60.0 as 60 (JSON Schema's integer, as fields.py's Id).
_Whole = BeforeValidator(integral)
Minutes = Annotated[int, Field(ge=1, le=24 * 60), _Whole]
Pence = Annotated[int, Field(ge=0, le=100_000_000), _Whole]
SlotMinutes = Annotated[int, Field(ge=15, le=60), _Whole, AfterValidator(_check_slot_minutes)]
Days = Annotated[int, Field(ge=1, le=366), _Whole]
Notice = Annotated[int, Field(ge=0, le=60 * 24 * 30), _Whole]


class GarageSection(_Strict):
    name: str = Field(min_length=1, max_length=100)
    timezone: Annotated[str, AfterValidator(_check_zone)] = "Europe/London"
    slot_minutes: SlotMinutes = 60
    book_ahead_days: Days = 60
    min_notice_minutes: Notice = 0

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class Hours(_Strict):
    monday: DayHours = []
    tuesday: DayHours = []
    wednesday: DayHours = []
    thursday: DayHours = []
    friday: DayHours = []
    saturday: DayHours = []
    sunday: DayHours = []

    def ranges(self, weekday: int) -> list[tuple[time, time | None]]:
        """The day's ranges as local times, in order; an end of None is midnight (24:00)."""
        result: list[tuple[time, time | None]] = []
        for text in sorted(getattr(self, WEEKDAYS[weekday])):
            start, end = text.split("-")
            result.append(
                (time.fromisoformat(start), None if end == "24:00" else time.fromisoformat(end))
            )
        return result


class Service(_Strict):
    key: str = Field(pattern=_KEY)
    name: str = Field(min_length=1, max_length=100)
    description: str = Field(default="", max_length=2000)
    minutes: Minutes
    price_pence: Pence
    needs: str = Field(default="general", pattern=_KEY)
    active: bool = True
    # Capacity (issue 15): the technician skill it takes, their minutes (None: `minutes`), and
    # whether the customer picks a time or leaves the car for the day.
    skill: str = Field(default="general", pattern=_KEY)
    labour_minutes: Minutes | None = None
    mode: Literal["timed", "drop_off"] = "timed"

    @property
    def labour(self) -> int:
        """The technician's minutes this service takes."""
        return self.minutes if self.labour_minutes is None else self.labour_minutes


class Bay(_Strict):
    name: str = Field(min_length=1, max_length=100)
    can: list[Annotated[str, Field(pattern=_KEY)]] = ["general"]
    active: bool = True


class Technician(_Strict):
    name: str = Field(min_length=1, max_length=100)
    skills: list[Annotated[str, Field(pattern=_KEY)]] = Field(min_length=1)
    # None: the garage's hours. When given it is the whole week: days left out are days off.
    hours: Hours | None = None
    active: bool = True

    def week(self, document: GarageDocument) -> Hours:
        """The hours this technician works: their own, or the garage's."""
        return document.hours if self.hours is None else self.hours


class DropOff(_Strict):
    window: TimeRange  # when drop-off cars are brought in
    collect_from: Clock  # when they can be collected (after the window starts)


class GarageDocument(_Strict):
    garage: GarageSection
    hours: Hours = Hours()
    closed: list[IsoDate] = []
    services: list[Service] = []
    bays: list[Bay] = []
    technicians: list[Technician] = []
    drop_off: DropOff | None = None

    @property
    def zone(self) -> ZoneInfo:
        return self.garage.zone

    @property
    def slot_length(self) -> timedelta:
        return timedelta(minutes=self.garage.slot_minutes)

    def canonical(self) -> str:
        """One text per meaning: two documents that say the same are equal in this form."""
        return json.dumps(to_json(self), sort_keys=True)


# The rules between values -------------------------------------------------------------------


def _minutes(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _hours_problems(hours: Hours, prefix: str, grid: int) -> list[Problem]:
    """A week's ranges on the slot grid and not overlapping (the garage's or a technician's)."""
    problems: list[Problem] = []
    for day in WEEKDAYS:
        spans = [
            (_minutes(text.split("-")[0]), _minutes(text.split("-")[1]), i)
            for i, text in enumerate(getattr(hours, day))
        ]
        for start, end, i in spans:
            if start % grid or end % grid:
                problems.append(
                    Problem(f"{prefix}.{day}[{i}]", f"not on the {grid}-minute slot grid")
                )
        reach, reached_by = -1, -1  # the latest end so far, and which range has it
        for start, end, i in sorted(spans):
            if start < reach:
                later = max(i, reached_by)
                problems.append(
                    Problem(f"{prefix}.{day}[{later}]", "overlaps another range that day")
                )
            if end > reach:
                reach, reached_by = end, i
    return problems


def _technician_problems(document: GarageDocument) -> list[Problem]:
    """Technicians, services' labour and mode, and the drop-off section. Skills are checked
    only when the document lists technicians: a garage that lists none does not plan by them."""
    grid = document.garage.slot_minutes
    problems: list[Problem] = []
    names: set[str] = set()
    for i, technician in enumerate(document.technicians):
        if technician.name in names:
            problems.append(
                Problem(f"technicians[{i}].name", f"duplicate technician name {technician.name!r}")
            )
        names.add(technician.name)
        seen: set[str] = set()
        for j, skill in enumerate(technician.skills):
            if skill in seen:
                problems.append(
                    Problem(f"technicians[{i}].skills[{j}]", f"{skill!r} is listed twice")
                )
            seen.add(skill)
        if technician.hours is not None:
            problems += _hours_problems(technician.hours, f"technicians[{i}].hours", grid)
    held = {s for t in document.technicians if t.active for s in t.skills}
    for i, service in enumerate(document.services):
        if (
            service.mode == "timed"
            and service.labour_minutes is not None
            and service.labour_minutes > service.minutes
        ):
            problems.append(
                Problem(
                    f"services[{i}].labour_minutes",
                    f"a timed service's labour is at most its minutes ({service.minutes})",
                )
            )
        if document.technicians and service.active and service.skill not in held:
            problems.append(
                Problem(
                    f"services[{i}].skill",
                    f"no active technician has the skill {service.skill!r}: add it to a "
                    "technician's `skills`, or retire the service (active = false)",
                )
            )
    drop_offs = [i for i, s in enumerate(document.services) if s.active and s.mode == "drop_off"]
    if drop_offs and document.drop_off is None:
        problems.append(
            Problem(
                f"services[{drop_offs[0]}].mode",
                "a drop_off service needs a [drop_off] section (window, collect_from)",
            )
        )
    if drop_offs and not document.technicians:
        problems.append(
            Problem(
                f"services[{drop_offs[0]}].mode",
                "a drop_off service takes a technician's minutes: list the [[technicians]]",
            )
        )
    if document.drop_off is not None:
        window = document.drop_off.window
        if _minutes(document.drop_off.collect_from) <= _minutes(window.split("-")[0]):
            problems.append(
                Problem("drop_off.collect_from", f"must be after the window starts ({window})")
            )
    return problems


def _rule_problems(document: GarageDocument) -> list[Problem]:
    grid = document.garage.slot_minutes
    problems = _hours_problems(document.hours, "hours", grid)
    seen_dates: set[date] = set()
    for i, day_closed in enumerate(document.closed):
        if day_closed in seen_dates:
            problems.append(Problem(f"closed[{i}]", f"{day_closed} is listed twice"))
        seen_dates.add(day_closed)
    keys: set[str] = set()
    service_names: set[str] = set()
    for i, service in enumerate(document.services):
        if service.key in keys:
            problems.append(Problem(f"services[{i}].key", f"duplicate service key {service.key!r}"))
        if service.name in service_names:
            problems.append(
                Problem(f"services[{i}].name", f"duplicate service name {service.name!r}")
            )
        keys.add(service.key)
        service_names.add(service.name)
        if service.minutes % grid:
            problems.append(
                Problem(
                    f"services[{i}].minutes",
                    f"{service.minutes} is not a multiple of slot_minutes ({grid})",
                )
            )
        elif service.minutes > grid * MAX_SLOTS_PER_SERVICE:
            problems.append(
                Problem(
                    f"services[{i}].minutes",
                    f"at most {grid * MAX_SLOTS_PER_SERVICE} minutes "
                    f"({MAX_SLOTS_PER_SERVICE} slots)",
                )
            )
    names: set[str] = set()
    for i, bay in enumerate(document.bays):
        if bay.name in names:
            problems.append(Problem(f"bays[{i}].name", f"duplicate bay name {bay.name!r}"))
        names.add(bay.name)
    capable = {c for bay in document.bays if bay.active for c in bay.can}
    for i, service in enumerate(document.services):
        if service.active and service.needs not in capable:
            problems.append(
                Problem(
                    f"services[{i}].needs",
                    f"no active bay can {service.needs!r}: add it to a bay's `can`, "
                    "or retire the service (active = false)",
                )
            )
    return problems + _technician_problems(document)


# Reading ------------------------------------------------------------------------------------


def _path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def _shape_problems(error: ValidationError) -> list[Problem]:
    problems = []
    for item in error.errors(include_url=False):
        loc = tuple(
            p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-"))
        )
        if item["type"] == "extra_forbidden":
            message = "unknown key (a typo?)"
        elif item["type"] == "missing":
            message = "required"
        else:
            message = str(item["msg"]).removeprefix("Value error, ")
        problems.append(Problem(_path(loc), message))
    return problems


def parse_json(data: Any) -> GarageDocument:
    """The document from decoded JSON (or TOML), or InvalidGarage naming every problem."""
    try:
        document = GarageDocument.model_validate(data)
    except ValidationError as error:
        raise InvalidGarage(_shape_problems(error)) from None
    problems = _rule_problems(document)
    if problems:
        raise InvalidGarage(problems)
    return document


def parse_toml(text: str) -> GarageDocument:
    """The document from a TOML file's text; each problem also carries its line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        found = re.search(r"at line (\d+)", str(error))
        raise InvalidGarage(
            [Problem("", f"not valid TOML: {error}", int(found.group(1)) if found else None)]
        ) from None
    try:
        return parse_json(data)
    except InvalidGarage as invalid:
        lines = _key_lines(text)
        raise InvalidGarage(
            [Problem(p.path, p.message, _line_for(lines, p.path)) for p in invalid.problems]
        ) from None


_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]\s*(#.*)?$")
_ARRAY_HEADER = re.compile(r"^\s*\[\[\s*([A-Za-z0-9_.-]+)\s*\]\]\s*(#.*)?$")
_ASSIGN = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*=")


def _key_lines(text: str) -> dict[str, int]:
    """Where each table and key is defined, by document path ("services[2].minutes" → 31).
    A line-level reading of the TOML the file's author wrote: enough to point at the line."""
    lines: dict[str, int] = {}
    counts: dict[str, int] = {}
    table = ""
    for number, line in enumerate(text.splitlines(), start=1):
        if (array := _ARRAY_HEADER.match(line)) is not None:
            name = array.group(1)
            index = counts.get(name, 0)
            counts[name] = index + 1
            table = f"{name}[{index}]"
            lines.setdefault(table, number)
        elif (header := _HEADER.match(line)) is not None:
            table = header.group(1)
            lines.setdefault(table, number)
        elif (assign := _ASSIGN.match(line)) is not None:
            key = assign.group(1)
            lines.setdefault(f"{table}.{key}" if table else key, number)
    return lines


def _line_for(lines: dict[str, int], path: str) -> int | None:
    """The line of the path, or of the nearest enclosing key or table that has one."""
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return None


# Writing ------------------------------------------------------------------------------------


def to_json(document: GarageDocument) -> dict[str, Any]:
    """The document as `GET /api/admin/garage` shows it (dates as ISO text). Keys left unset
    that mean "the default" (a technician's hours, a service's labour_minutes, [drop_off])
    are left out: TOML has no null, and the two forms must say the same."""
    return document.model_dump(mode="json", exclude_none=True)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # A JSON string with non-ASCII kept is a valid TOML basic string.
    return json.dumps(str(value), ensure_ascii=False)


def to_toml(document: GarageDocument) -> str:
    """The document as a TOML file `garagebook garage apply` reads back unchanged. `closed` is
    a top-level key, so it comes first: in TOML a bare key after a [table] belongs to it."""
    data = to_json(document)
    out = ["# whole days closed", f"closed = {_toml_value(data['closed'])}", "", "[garage]"]
    out += [f"{k} = {_toml_value(v)}" for k, v in data["garage"].items()]
    out += ["", "[hours]"]
    out += [f"{day} = {_toml_value(data['hours'][day])}" for day in WEEKDAYS]
    for name in ("services", "bays", "technicians"):
        for item in data.get(name, []):
            out += ["", f"[[{name}]]"]
            out += [f"{k} = {_toml_value(v)}" for k, v in item.items() if k != "hours"]
            if "hours" in item:
                # An inline table: the whole week is one value, so `hours` stays this item's.
                week = ", ".join(f"{d} = {_toml_value(r)}" for d, r in item["hours"].items() if r)
                out.append(f"hours = {{ {week} }}")
    if "drop_off" in data:
        out += ["", "[drop_off]"]
        out += [f"{k} = {_toml_value(v)}" for k, v in data["drop_off"].items()]
    return "\n".join(out) + "\n"
