"""One concurrency test run: per iteration, take a fresh free slot, fire N bookings for it at
once, classify the answers, check through the API that the slot is now taken, clean up."""

from __future__ import annotations

import json
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from garagebook.concurrency.fire import Response, Target, fire_together


class ServerUnreachable(Exception):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


class NoFreeSlot(Exception):
    """No free slot to test on, and no ADMIN_TOKEN to create one."""


@dataclass(frozen=True)
class Config:
    urls: list[str]
    requests: int
    iterations: int
    admin_token: str | None = None
    cleanup: bool = False
    timeout: float = 30.0
    # Book by time (`starts_at`) instead of by slot: the server picks bay and technician, and
    # a time with `free` units (GET /api/availability) must give exactly that many 201s.
    by_time: bool = False
    # Book a drop-off service by day: the day with the fewest places left must give exactly
    # that many 201s (no technician's day past their hours).
    drop_off: bool = False


@dataclass
class Iteration:
    number: int
    slot: dict[str, Any]
    responses: list[Response]
    slot_shows_taken: bool | None = None  # None: could not be checked
    cancelled: int = 0
    problems: list[str] = field(default_factory=list)
    units: int = 1  # how many bookings the time had room for (one slot: 1)

    @property
    def created(self) -> list[Response]:
        return [r for r in self.responses if r.status == 201]

    @property
    def conflicts(self) -> list[Response]:
        return [r for r in self.responses if r.status == 409]

    @property
    def errors(self) -> list[Response]:
        return [r for r in self.responses if r.status not in (201, 409)]

    def rejected_by(self) -> dict[str, int]:
        counts: dict[str, int] = {"reservation": 0, "database": 0}
        for response in self.conflicts:
            layer = _error_field(response.body, "rejected_by") or "unknown"
            counts[layer] = counts.get(layer, 0) + 1
        return counts

    @property
    def passed(self) -> bool:
        return not self.problems


def _error_field(body: bytes, name: str) -> str | None:
    try:
        value = json.loads(body)["error"][name]
    except (ValueError, KeyError, TypeError):
        return None
    return str(value)


def judge(iteration: Iteration, expected: int) -> None:
    """Fill in `problems`, in words, from what the iteration saw."""
    successes, errors, units = len(iteration.created), len(iteration.errors), iteration.units
    if successes > units:
        free = "" if units == 1 else f" for {units} free"
        iteration.problems.append(f"{successes} successes{free} ← BAD! Double-booking occurred")
    elif successes == 0:
        iteration.problems.append("0 successes ← nobody got the slot")
    elif successes < units and not errors:
        iteration.problems.append(f"{successes} successes, {units} were free ← some were lost")
    if errors:
        kinds = sorted({str(r.status) if r.status else (r.error or "?") for r in iteration.errors})
        noun = "error" if errors == 1 else "errors"
        iteration.problems.append(f"{errors} {noun} ← something broke: {', '.join(kinds)}")
        client_side = sum(r.client_side for r in iteration.errors)
        if client_side:
            iteration.problems.append(
                f"{client_side} of them on the client: it could not open that many connections "
                "(raise `ulimit -n`); that is not the server's fault"
            )
    if len(iteration.conflicts) != expected - units and not errors and successes <= units:
        iteration.problems.append(
            f"{len(iteration.conflicts)} conflicts, expected {expected - units}"
        )
    if iteration.slot_shows_taken is False and successes:
        iteration.problems.append("the slot still shows as available after a 201")


async def check_reachable(urls: list[str]) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        for url in urls:
            try:
                await client.get(f"{url}/health")
            except httpx.HTTPError as exc:
                raise ServerUnreachable(url) from exc


async def run(config: Config, on_iteration: Callable[[Iteration], None]) -> list[Iteration]:
    await check_reachable(config.urls)
    base = config.urls[0]
    used: set[int] = set()
    iterations = []
    async with httpx.AsyncClient(base_url=base, timeout=config.timeout) as api:
        service_id = await (_drop_off_service(api) if config.drop_off else _shortest_service(api))
        # Every request is its own customer and car, and so is every run: the server caps live
        # bookings per e-mail and per registration, which a repeated identity would reach.
        run_tag = secrets.token_hex(2).upper()
        for number in range(1, config.iterations + 1):
            if config.by_time or config.drop_off:
                shape = _drop_off_day if config.drop_off else _by_time
                iterations.append(await shape(api, config, service_id, used, run_tag, number))
                on_iteration(iterations[-1])
                continue
            slot = await _fresh_slot(api, service_id, used, config.admin_token)
            used.add(slot["id"])
            targets = [
                Target(
                    config.urls[i % len(config.urls)],
                    "/api/bookings",
                    json.dumps(_booking(slot["id"], service_id, run_tag, number, i)).encode(),
                )
                for i in range(config.requests)
            ]
            iteration = Iteration(number, slot, await fire_together(targets, config.timeout))
            iteration.slot_shows_taken = await _slot_shows_taken(api, slot)
            if config.cleanup:
                iteration.cancelled = await _cancel(api, iteration.created)
            judge(iteration, config.requests)
            iterations.append(iteration)
            on_iteration(iteration)
    return iterations


async def _by_time(
    api: httpx.AsyncClient,
    config: Config,
    service_id: int,
    used: set[int],
    run_tag: str,
    number: int,
) -> Iteration:
    """One iteration by time: the start with the fewest free units (a technician's last free
    hour, where the garage lists technicians), N bookings of it at once, exactly that many
    201s expected; afterwards it must no longer be offered."""
    start = await _scarcest_start(api, service_id, used)
    used.add(int(datetime.fromisoformat(start["starts_at"]).timestamp()))
    return await _fire_units(
        api,
        config,
        service_id,
        run_tag,
        number,
        when={"starts_at": start["starts_at"]},
        units=int(start["free"]),
        shown={"id": "-", "bay_id": "any", "starts_at": start["starts_at"]},
        gone=lambda after, _: all(a["starts_at"] != start["starts_at"] for a in after),
    )


async def _drop_off_day(
    api: httpx.AsyncClient,
    config: Config,
    service_id: int,
    used: set[int],
    run_tag: str,
    number: int,
) -> Iteration:
    """One iteration by day: the offered drop-off day with the fewest places (from tomorrow:
    no window may open while the test runs), N bookings of it at once, exactly that many 201s
    expected; afterwards, if they filled it, it must no longer be offered."""
    today = datetime.now(UTC).date().isoformat()
    offered = (
        (await api.get("/api/availability", params={"service_id": service_id}))
        .raise_for_status()
        .json()
    )
    days = [
        d
        for d in offered
        if d["day"] > today and date.fromisoformat(d["day"]).toordinal() not in used
    ]
    if not days:
        raise NoFreeSlot()
    chosen = min(days, key=lambda d: (d["free"], d["day"]))
    used.add(date.fromisoformat(chosen["day"]).toordinal())
    return await _fire_units(
        api,
        config,
        service_id,
        run_tag,
        number,
        when={"day": chosen["day"]},
        units=int(chosen["free"]),
        shown={"id": "-", "bay_id": "none (drop-off)", "starts_at": chosen["day"]},
        gone=lambda after, it: not after or len(it.created) < it.units,
    )


async def _fire_units(
    api: httpx.AsyncClient,
    config: Config,
    service_id: int,
    run_tag: str,
    number: int,
    *,
    when: dict[str, str],
    units: int,
    shown: dict[str, Any],
    gone: Callable[[list[dict[str, Any]], Iteration], bool],
) -> Iteration:
    """N bookings at once of one time or day (`when`: its `starts_at` or `day`) that has room
    for `units`; then `gone` reads that day's availability: is it no longer offered?"""
    bodies = [
        {**_booking(None, service_id, run_tag, number, i), **when} for i in range(config.requests)
    ]
    targets = [
        Target(config.urls[i % len(config.urls)], "/api/bookings", json.dumps(body).encode())
        for i, body in enumerate(bodies)
    ]
    iteration = Iteration(number, shown, await fire_together(targets, config.timeout))
    iteration.units = units
    day = (when.get("day") or when["starts_at"])[:10]
    try:
        after = (
            await api.get("/api/availability", params={"service_id": service_id, "date": day})
        ).json()
        iteration.slot_shows_taken = gone(after, iteration)
    except (httpx.HTTPError, ValueError, TypeError, KeyError):
        iteration.slot_shows_taken = None
    if config.cleanup:
        iteration.cancelled = await _cancel(api, iteration.created)
    judge(iteration, config.requests)
    return iteration


async def _drop_off_service(api: httpx.AsyncClient) -> int:
    services = (await api.get("/api/services")).raise_for_status().json()
    found = [s for s in services if s.get("mode") == "drop_off"]
    if not found:
        raise NoFreeSlot()
    return int(found[0]["id"])


async def _scarcest_start(
    api: httpx.AsyncClient, service_id: int, used: set[int]
) -> dict[str, Any]:
    """Of the next two weeks' offered starts (from tomorrow: none may pass while the test
    runs), one with the fewest free units, soonest first."""
    found: list[dict[str, Any]] = []
    today = datetime.now(UTC).date()
    for ahead in range(1, 15):
        day = (today + timedelta(days=ahead)).isoformat()
        offered = (
            (await api.get("/api/availability", params={"service_id": service_id, "date": day}))
            .raise_for_status()
            .json()
        )
        found += [
            a
            for a in offered
            if int(datetime.fromisoformat(a["starts_at"]).timestamp()) not in used
        ]
        if any(a["free"] == 1 for a in found):
            break
    if not found:
        raise NoFreeSlot()
    return min(found, key=lambda a: (a["free"], a["starts_at"]))


async def _shortest_service(api: httpx.AsyncClient) -> int:
    services = (await api.get("/api/services")).raise_for_status().json()
    return int(min(services, key=lambda s: s["duration_minutes"])["id"])


async def _fresh_slot(
    api: httpx.AsyncClient, service_id: int, used: set[int], admin_token: str | None
) -> dict[str, Any]:
    params: dict[str, str | int] = {"available": "true", "service_id": service_id, "limit": 1000}
    listed = (await api.get("/api/slots", params=params)).raise_for_status().json()
    for slot in listed:
        if slot["id"] not in used:
            return dict(slot)
    if admin_token is None:
        raise NoFreeSlot()
    return await _create_slot(api, admin_token)


async def _create_slot(api: httpx.AsyncClient, admin_token: str) -> dict[str, Any]:
    """A one-hour slot far in the future at a random minute, retried past any overlap."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    for _ in range(20):
        start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(
            days=400,
            minutes=random.randrange(0, 60 * 24 * 365),  # noqa: S311 (not security)
        )
        body = {
            "bay_id": 1,
            "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(hours=1)).isoformat(),
        }
        response = await api.post("/api/admin/slots", json=body, headers=headers)
        if response.status_code == 201:
            return dict(response.json())
        if response.status_code != 409:
            response.raise_for_status()
    raise NoFreeSlot()


def _booking(
    slot_id: int | None, service_id: int, run_tag: str, iteration: int, index: int
) -> dict[str, Any]:
    return {
        **({"slot_id": slot_id} if slot_id is not None else {}),
        "service_id": service_id,
        "customer": {
            "name": f"Concurrency Test {iteration}-{index}",
            "email": f"concurrency-test+{run_tag}-{iteration}-{index}@example.com",
        },
        "vehicle": {"registration": f"{run_tag}{iteration % 10_000:04d} {index % 10**6:06d}"},
        "notes": "garagebook concurrency-test",
    }


async def _slot_shows_taken(api: httpx.AsyncClient, slot: dict[str, Any]) -> bool | None:
    day = slot["starts_at"][:10]
    try:
        listed = (await api.get("/api/slots", params={"date": day, "limit": 1000})).json()
    except (httpx.HTTPError, ValueError):
        return None
    for candidate in listed:
        if candidate["id"] == slot["id"]:
            return not candidate["available"]
    return None


async def _cancel(api: httpx.AsyncClient, created: list[Response]) -> int:
    """Cancel what the run booked, each with the manage token its 201 carried (the id alone
    opens nothing)."""
    cancelled = 0
    for response in created:
        booking = json.loads(response.body)
        headers = {"Authorization": f"Bearer {booking['cancel_token']}"}
        cancel = await api.post(f"/api/bookings/{booking['id']}/cancel", headers=headers)
        if cancel.status_code == 200:
            cancelled += 1
    return cancelled
