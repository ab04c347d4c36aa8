"""The setup document on its own: every bad case of DESIGN.md named with its path (and, from
TOML, its line), the round trip through TOML, and the calendar it makes across clock changes."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from garagebook.garage.calendar import day_times
from garagebook.garage.demo import DEMO_GARAGE, demo_document
from garagebook.garage.document import InvalidGarage, parse_json, parse_toml, to_json, to_toml

LONDON = ZoneInfo("Europe/London")


def demo() -> dict[str, Any]:
    return to_json(demo_document())


def problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(InvalidGarage) as refused:
        parse_json(data)
    return [(p.path, p.message) for p in refused.value.problems]


def test_the_demo_file_round_trips_through_toml() -> None:
    document = parse_toml(DEMO_GARAGE.read_text())
    assert parse_toml(to_toml(document)) == document
    assert (len(document.services), len(document.bays), document.garage.slot_minutes) == (4, 3, 60)


@pytest.mark.parametrize(
    ("change", "path", "says"),
    [
        (lambda d: d["garage"].update(colour="red"), "garage.colour", "unknown key"),
        (lambda d: d.update(mechanics=[]), "mechanics", "unknown key"),
        (lambda d: d["services"][1].update(minuts=60), "services[1].minuts", "unknown key"),
        (
            lambda d: d["hours"].update(monday=["08:00-12:00", "11:00-13:00"]),
            "hours.monday[1]",
            "overlaps",
        ),
        (lambda d: d["hours"].update(tuesday=["17:00-08:00"]), "hours.tuesday[0]", "ends before"),
        (lambda d: d["hours"].update(friday=["8am-5pm"]), "hours.friday[0]", "HH:MM-HH:MM"),
        (lambda d: d["hours"].update(friday=["25:00-26:00"]), "hours.friday[0]", "time of day"),
        (lambda d: d["hours"].update(friday=["08:10-17:00"]), "hours.friday[0]", "slot grid"),
        (lambda d: d["garage"].update(timezone="Mars/Olympus"), "garage.timezone", "time zone"),
        (lambda d: d["garage"].update(slot_minutes=25), "garage.slot_minutes", "one of"),
        (lambda d: d["services"][0].update(minutes=90), "services[0].minutes", "multiple of"),
        (lambda d: d["services"][2].update(key="mot"), "services[2].key", "duplicate service key"),
        (lambda d: d["bays"][2].update(name="Bay 1"), "bays[2].name", "duplicate bay name"),
        (lambda d: d["services"][3].update(name="MOT"), "services[3].name", "duplicate service"),
        (lambda d: d["services"][0].update(needs="mot"), "services[0].needs", "no active bay"),
        (lambda d: d.update(closed=["2026-13-01"]), "closed[0]", "month must be in 1..12"),
        (lambda d: d.update(closed=["25/12/2026"]), "closed[0]", "YYYY-MM-DD"),
        (lambda d: d["services"][0].update(minutes="60"), "services[0].minutes", "integer"),
        (lambda d: d["garage"].pop("name"), "garage.name", "required"),
    ],
)
def test_every_bad_case_is_named_with_its_path(change: Any, path: str, says: str) -> None:
    data = demo()
    change(data)
    found = problems(data)
    assert any(p == path and says in m for p, m in found), found


def test_a_retired_bay_does_not_count_for_needs() -> None:
    data = demo()
    data["services"][0]["needs"] = "mot"
    data["bays"][0] = {"name": "Bay 1", "can": ["mot", "general"], "active": False}
    assert ("services[0].needs") in [p for p, _ in problems(data)]


def test_every_problem_is_listed_at_once() -> None:
    data = demo()
    data["services"][0]["minutes"] = 45
    data["bays"][1]["name"] = "Bay 1"
    data["hours"]["monday"] = ["08:00-12:00", "09:00-10:00"]
    paths = {p for p, _ in problems(data)}
    assert {"services[0].minutes", "bays[1].name", "hours.monday[1]"} <= paths


BAD_TOML = """\
[garage]
name = "Smith & Sons"
timezone = "Europe/London"
slot_minutes = 30
colour = "red"

[hours]
monday = ["08:00-12:30", "12:00-17:30"]

[[services]]
key = "mot"
name = "MOT"
minutes = 45
price_pence = 5485

[[bays]]
name = "Bay 1"
"""


def test_toml_problems_carry_their_lines() -> None:
    with pytest.raises(InvalidGarage) as refused:
        parse_toml(BAD_TOML)
    found = {(p.path, p.line) for p in refused.value.problems}
    assert ("garage.colour", 5) in found
    # The rules between values are a second pass: fixed shapes first.
    fixed = BAD_TOML.replace('colour = "red"\n', "")
    with pytest.raises(InvalidGarage) as refused:
        parse_toml(fixed)
    found = {(p.path, p.line) for p in refused.value.problems}
    assert found == {("hours.monday[1]", 7), ("services[0].minutes", 12)}
    assert str(refused.value.problems[0]).startswith("hours.monday[1] (line 7): ")


def test_a_toml_syntax_error_names_its_line() -> None:
    with pytest.raises(InvalidGarage) as refused:
        parse_toml('[garage]\nname = "x\n')
    assert refused.value.problems[0].line == 2


# --- the calendar the document makes --------------------------------------------------------


def test_breaks_and_the_grid() -> None:
    data = demo()
    data["garage"]["slot_minutes"] = 30
    data["hours"]["monday"] = ["13:00-14:00", "08:00-09:30"]
    document = parse_json(data)
    monday = date(2027, 1, 4)
    starts = [s.astimezone(LONDON).strftime("%H:%M") for s, _ in day_times(document, monday)]
    assert starts == ["08:00", "08:30", "09:00", "13:00", "13:30"]


def test_a_range_to_midnight_across_the_autumn_change() -> None:
    """On 31 October 2027 the clock repeats 01:00-02:00: a day open around the clock has one
    slot per wall hour, each an hour long; on 28 March 2027 the skipped hour has none."""
    data = demo()
    data["hours"]["sunday"] = ["00:00-24:00"]
    document = parse_json(data)
    autumn = day_times(document, date(2027, 10, 31))
    assert all(end - start == timedelta(hours=1) for start, end in autumn)
    spring = [s.astimezone(LONDON).hour for s, _ in day_times(document, date(2027, 3, 28))]
    # 01:00 does not exist, and 00:00 would end in the gap: the day starts at 02:00.
    assert spring == list(range(2, 24))


# --- technicians, labour and drop-offs (issue 15) -------------------------------------------


def with_technicians() -> dict[str, Any]:
    data = demo()
    data["technicians"] = [
        {"name": "Priya", "skills": ["mot_tester", "general"]},
        {"name": "Tom", "skills": ["general"], "hours": {"monday": ["08:00-12:00"]}},
    ]
    data["services"][0]["skill"] = "mot_tester"
    return data


@pytest.mark.parametrize(
    ("change", "path", "says"),
    [
        (lambda d: d["technicians"][1].update(name="Priya"), "technicians[1].name", "duplicate"),
        (lambda d: d["technicians"][1].update(name=""), "technicians[1].name", "at least 1"),
        (lambda d: d["technicians"][0].update(skills=[]), "technicians[0].skills", "at least 1"),
        (lambda d: d["technicians"][0].pop("skills"), "technicians[0].skills", "required"),
        (
            lambda d: d["technicians"][0].update(skills=["MOT Tester"]),
            "technicians[0].skills[0]",
            "pattern",
        ),
        (
            lambda d: d["technicians"][0].update(skills=["general", "general"]),
            "technicians[0].skills[1]",
            "listed twice",
        ),
        (
            lambda d: d["technicians"][1]["hours"].update(monday=["08:00-12:00", "11:00-13:00"]),
            "technicians[1].hours.monday[1]",
            "overlaps",
        ),
        (
            lambda d: d["technicians"][1]["hours"].update(monday=["08:10-12:00"]),
            "technicians[1].hours.monday[0]",
            "slot grid",
        ),
        (
            lambda d: d["technicians"][1]["hours"].update(monday=["8-12"]),
            "technicians[1].hours.monday[0]",
            "HH:MM-HH:MM",
        ),
        (
            lambda d: d["technicians"][1]["hours"].update(funday=[]),
            "technicians[1].hours.funday",
            "unknown key",
        ),
        (lambda d: d["technicians"][0].update(colour="red"), "technicians[0].colour", "unknown"),
        (lambda d: d["technicians"][0].update(active=False), "services[0].skill", "no active"),
        (lambda d: d["services"][1].update(skill="welding"), "services[1].skill", "no active"),
        (lambda d: d["services"][1].update(skill="Weld!"), "services[1].skill", "pattern"),
        (
            lambda d: d["services"][1].update(labour_minutes=90),
            "services[1].labour_minutes",
            "at most its minutes",
        ),
        (
            lambda d: d["services"][1].update(labour_minutes=0),
            "services[1].labour_minutes",
            "greater than",
        ),
        (lambda d: d["services"][1].update(mode="walk_in"), "services[1].mode", "'timed'"),
        (lambda d: d["services"][3].update(mode="drop_off"), "services[3].mode", "[drop_off]"),
        (
            lambda d: d.update(drop_off={"window": "08:00-09:30", "collect_from": "08:00"}),
            "drop_off.collect_from",
            "after the window starts",
        ),
        (
            lambda d: d.update(drop_off={"window": "09:30-08:00", "collect_from": "16:30"}),
            "drop_off.window",
            "ends before",
        ),
        (
            lambda d: d.update(drop_off={"window": "08:00-09:30", "collect_from": "4pm"}),
            "drop_off.collect_from",
            "HH:MM",
        ),
        (
            lambda d: d.update(drop_off={"window": "08:00-09:30"}),
            "drop_off.collect_from",
            "required",
        ),
    ],
)
def test_every_bad_technician_case_is_named_with_its_path(
    change: Any, path: str, says: str
) -> None:
    data = with_technicians()
    change(data)
    found = problems(data)
    assert any(p == path and says in m for p, m in found), found


def test_skills_are_not_checked_when_the_document_lists_no_technicians() -> None:
    data = demo()
    data["services"][0]["skill"] = "mot_tester"
    assert parse_json(data).services[0].skill == "mot_tester"
    data["technicians"] = [{"name": "Tom", "skills": ["general"]}]
    assert [p for p, _ in problems(data)] == ["services[0].skill"]


def test_a_retired_service_needs_no_skill_and_no_drop_off_section() -> None:
    data = with_technicians()
    data["services"][3].update(skill="welding", mode="drop_off", active=False)
    parse_json(data)


def test_labour_defaults_to_minutes_and_a_drop_off_may_take_more() -> None:
    data = with_technicians()
    data["services"][3].update(mode="drop_off", labour_minutes=420)
    data["drop_off"] = {"window": "08:00-09:30", "collect_from": "16:30"}
    document = parse_json(data)
    assert (document.services[0].labour, document.services[3].labour) == (60, 420)
    assert document.technicians[0].week(document) == document.hours
    assert document.technicians[1].week(document).monday == ["08:00-12:00"]
    assert document.technicians[1].week(document).tuesday == []


def test_technicians_round_trip_through_toml_and_json() -> None:
    data = with_technicians()
    data["technicians"].append({"name": "Off all week", "skills": ["general"], "hours": {}})
    data["technicians"].append({"name": "Retired", "skills": ["general"], "active": False})
    data["services"][3].update(mode="drop_off", labour_minutes=180)
    data["drop_off"] = {"window": "08:00-09:30", "collect_from": "16:30"}
    document = parse_json(data)
    assert parse_toml(to_toml(document)) == document
    assert parse_json(to_json(document)) == document
    assert document.technicians[0].hours is None  # "the garage's", not a copy of them
    assert "hours" not in to_json(document)["technicians"][0]


TECHNICIAN_TOML = (
    to_toml(parse_json(demo()))
    + """
[[technicians]]
name = "Priya"
skills = ["general"]

[[technicians]]
name = "Tom"
skills = ["general"]
hours = { monday = ["08:00-12:00", "11:00-13:00"] }
"""
)


def test_technician_problems_carry_their_lines() -> None:
    with pytest.raises(InvalidGarage) as refused:
        parse_toml(TECHNICIAN_TOML)
    lines = TECHNICIAN_TOML.splitlines()
    hours = next(i for i, line in enumerate(lines, 1) if line.startswith("hours = { monday"))
    assert {(p.path, p.line) for p in refused.value.problems} == {
        ("technicians[1].hours.monday[1]", hours)
    }
