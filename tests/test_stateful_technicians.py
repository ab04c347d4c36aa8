"""Random sequences of booking, moving, reassigning and cancelling one-hour MOTs, oil changes and
two-hour drop-offs (on two days, moved between them) on two bays with two technicians — Priya,
the only MOT tester (who also does general work), and Sam (general), each working 4 hours a day
— against the real app on SQLite and on PostgreSQL + Redis, checked after every step against a
model of issue 15's rules: a timed booking needs a free bay slot and a free qualified technician
at its time with an hour of their day left; an oil change or a drop-off goes to Sam while he can
(Priya is kept for MOTs); a drop-off takes 120 minutes of a day and no bay until staff place it
on a bay for two hours of its day, which then hold that bay and its technician; a reassignment
moves a booking to another technician only where they could have taken it; a drop-off moved to
the other day stays with its technician while they have the minutes there, else goes to the
first who has, and leaves its bay; no bay and no technician is ever in two live bookings at one
time, and each technician's day counts exactly the minutes of their live bookings that day,
never past their 4 hours."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Coroutine
from datetime import date, timedelta
from typing import Any, TypeVar

import httpx
import pytest
from asgi_lifespan import LifespanManager
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from garagebook.app import create_app
from tests.support.stack import ADMIN_TOKEN, Stack, reset_database
from tests.support.technicians import (
    MOT,
    OIL,
    add_drop_off_service,
    add_technicians,
    body,
    drop_off,
)
from tests.test_drop_offs import working

ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
HOURS = 4  # consecutive hours of one day in play
BAYS = 2
DROP = 0  # the model's name for the drop-off service
SKILLED = {MOT: ("Priya",), OIL: ("Sam", "Priya"), DROP: ("Sam", "Priya")}  # in the server's order
WORKING = 240  # each technician's minutes that day
MINUTES = {MOT: 60, OIL: 60, DROP: 120}

T = TypeVar("T")


def held_hours(hour: int, service: int) -> set[int]:
    """The hours a booking holds its bay and technician: a timed one, its hour; a drop-off
    placed on a bay, two from its hour; an unplaced drop-off (hour -1), none."""
    if hour < 0:
        return set()
    return set(range(hour, hour + MINUTES[service] // 60))


def make_machine(stack: Stack) -> type[RuleBasedStateMachine]:
    class Technicians(RuleBasedStateMachine):
        bookings = Bundle("bookings")

        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.run(reset_database(stack.database_url))
            self.ids = self.run(
                add_technicians(
                    stack.database_url, ("Priya", "mot_tester,general"), ("Sam", "general")
                )
            )
            self.drop_off = self.run(add_drop_off_service(stack.database_url, 120))
            prefix = f"gbtech:{uuid.uuid4().hex[:8]}:"
            self.app = create_app(stack.settings(redis_key_prefix=prefix))

            async def start() -> LifespanManager:
                lifespan = LifespanManager(self.app)
                await lifespan.__aenter__()
                return lifespan

            self.lifespan = self.run(start())
            self.api = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=self.lifespan.app), base_url="http://t"
            )
            self.engine = create_async_engine(stack.database_url)
            listed = self.run(
                self.api.get("/api/slots", params={"available": "true", "limit": 1000})
            ).json()
            days = sorted({s["starts_at"][:10] for s in listed})
            day = [s for s in listed if s["starts_at"][:10] == days[1]]  # tomorrow or later
            hours = sorted({s["starts_at"] for s in day})[:HOURS]
            self.hours = hours
            bays = sorted({s["bay_id"] for s in day})[:BAYS]
            self.bay_ids = bays
            self.slot = {
                (hours.index(s["starts_at"]), bays.index(s["bay_id"])): s["id"]
                for s in day
                if s["starts_at"] in hours and s["bay_id"] in bays
            }
            self.day = date.fromisoformat(days[1])
            after = self.day + timedelta(days=1)
            self.days = [self.day, after + timedelta(days=after.weekday() == 6)]  # no Sunday
            self.run(working(stack.database_url, WORKING))
            # The model: live booking → (hour, bay, technician name, service, day index); a
            # drop-off has hour and bay -1 until placed on a bay (from that hour, for two);
            # timed bookings and placements are all on day 0.
            self.live: dict[str, tuple[int, int, str, int, int]] = {}
            self.tokens: dict[str, str] = {}
            self.n = 0

        def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
            return self.loop.run_until_complete(coroutine)

        def teardown(self) -> None:
            self.run(self.api.aclose())
            self.run(self.lifespan.__aexit__(None, None, None))
            self.run(self.engine.dispose())
            self.loop.close()

        def who(
            self,
            hour: int,
            bay: int,
            service: int,
            moving: str | None = None,
            day: int = 0,
            first: tuple[str, ...] = (),
        ) -> str | None:
            """Who the model says takes it (`first` tried before the server's order), or
            None when it must be refused."""
            others = {k: v for k, v in self.live.items() if k != moving}
            wanted = held_hours(hour, service)
            if any(b == bay and held_hours(h, s) & wanted for h, b, _, s, _ in others.values()):
                return None  # the bay is taken (an unplaced drop-off takes none)
            order = (*first, *(t for t in SKILLED[service] if t not in first))
            return next((t for t in order if self.can(t, hour, service, moving, day)), None)

        def can(
            self, name: str, hour: int, service: int, moving: str | None = None, day: int = 0
        ) -> bool:
            """Whether `name` may take the booking (`moving` not counted): the skill, their
            time free (a timed booking) and the minutes left in their `day`."""
            others = [v for k, v in self.live.items() if k != moving]
            wanted = held_hours(hour, service)
            busy = any(t == name and held_hours(h, s) & wanted for h, _, t, s, _ in others)
            used = sum(MINUTES[s] for _, _, t, s, d in others if t == name and d == day)
            return name in SKILLED[service] and not busy and used + MINUTES[service] <= WORKING

        @rule(
            target=bookings,
            hour=st.integers(0, HOURS - 1),
            bay=st.integers(0, BAYS - 1),
            service=st.sampled_from([MOT, OIL]),
        )
        def book(self, hour: int, bay: int, service: int) -> str:
            self.n += 1
            expected = self.who(hour, bay, service)
            reply = self.run(
                self.api.post("/api/bookings", json=body(self.slot[(hour, bay)], service, self.n))
            )
            if expected is None:
                assert reply.status_code == 409, (reply.text, self.live)
                return "none"
            assert reply.status_code == 201, (reply.text, self.live)
            assert reply.json()["technician_id"] == self.ids[expected]
            self.live[reply.json()["id"]] = (hour, bay, expected, service, 0)
            self.tokens[reply.json()["id"]] = reply.json()["cancel_token"]
            return str(reply.json()["id"])

        @rule(target=bookings, day=st.integers(0, 1))
        def drop(self, day: int) -> str:
            self.n += 1
            expected = self.who(-1, -1, DROP, day=day)
            reply = self.run(
                self.api.post("/api/bookings", json=drop_off(self.drop_off, self.days[day], self.n))
            )
            if expected is None:
                assert reply.status_code == 409, (reply.text, self.live)
                return "none"
            assert reply.status_code == 201, (reply.text, self.live)
            assert reply.json()["technician_id"] == self.ids[expected]
            self.live[reply.json()["id"]] = (-1, -1, expected, DROP, day)
            self.tokens[reply.json()["id"]] = reply.json()["cancel_token"]
            return str(reply.json()["id"])

        @rule(booking=bookings, name=st.sampled_from(["Priya", "Sam"]))
        def reassign(self, booking: str, name: str) -> None:
            if booking == "none":
                return
            reply = self.run(
                self.api.post(
                    f"/api/admin/bookings/{booking}/reassign",
                    json={"technician_id": self.ids[name]},
                    headers=ADMIN_AUTH,
                )
            )
            if booking not in self.live:
                assert reply.status_code == 409, reply.text
                return
            hour, bay, now, service, day = self.live[booking]
            if name == now:  # already theirs: nothing changes
                assert reply.status_code == 200, reply.text
                return
            if not self.can(name, hour, service, moving=booking, day=day):
                assert reply.status_code == 409, (reply.text, self.live)
                return
            assert reply.status_code == 200, (reply.text, self.live)
            assert reply.json()["technician_id"] == self.ids[name]
            self.live[booking] = (hour, bay, name, service, day)

        @rule(booking=bookings)
        def cancel(self, booking: str) -> None:
            if booking == "none":
                return
            reply = self.run(self.api.post(f"/api/bookings/{booking}/cancel", headers=ADMIN_AUTH))
            if booking in self.live:
                assert reply.status_code == 200, reply.text
                del self.live[booking]
            else:
                assert reply.status_code == 409

        @rule(booking=bookings, hour=st.integers(0, HOURS - 1), bay=st.integers(0, BAYS - 1))
        def move(self, booking: str, hour: int, bay: int) -> None:
            if booking == "none":
                return
            reply = self.run(
                self.api.post(
                    f"/api/manage/{self.tokens[booking]}/reschedule",
                    json={"slot_id": self.slot[(hour, bay)]},
                )
            )
            if booking not in self.live:
                assert reply.status_code == 409, reply.text
                return
            service = self.live[booking][3]
            if service == DROP:  # a drop-off is not moved to a time
                assert reply.status_code == 422, reply.text
                return
            expected = self.who(hour, bay, service, moving=booking)
            if expected is None:
                assert reply.status_code == 409, (reply.text, self.live)
                return
            assert reply.status_code == 200, (reply.text, self.live)
            assert reply.json()["technician_id"] == self.ids[expected]
            self.live[booking] = (hour, bay, expected, service, 0)

        @rule(booking=bookings, day=st.integers(0, 1))
        def move_day(self, booking: str, day: int) -> None:
            if booking == "none":
                return
            reply = self.run(
                self.api.post(
                    f"/api/manage/{self.tokens[booking]}/reschedule",
                    json={"day": self.days[day].isoformat()},
                )
            )
            if booking not in self.live:
                assert reply.status_code == 409, reply.text
                return
            _, _, now, service, was = self.live[booking]
            if service != DROP:  # a timed booking is not moved to a day
                assert reply.status_code == 422, reply.text
                return
            if day == was:  # the same day: nothing changes
                assert reply.status_code == 200, reply.text
                return
            expected = self.who(-1, -1, DROP, moving=booking, day=day, first=(now,))
            if expected is None:
                assert reply.status_code == 409, (reply.text, self.live)
                return
            assert reply.status_code == 200, (reply.text, self.live)
            assert reply.json()["technician_id"] == self.ids[expected]
            self.live[booking] = (-1, -1, expected, DROP, day)  # off its bay

        @rule(booking=bookings, hour=st.integers(0, HOURS - 2), bay=st.integers(0, BAYS - 1))
        def place(self, booking: str, hour: int, bay: int) -> None:
            if booking == "none":
                return
            reply = self.run(
                self.api.post(
                    f"/api/admin/bookings/{booking}/reassign",
                    json={"bay_id": self.bay_ids[bay], "starts_at": self.hours[hour]},
                    headers=ADMIN_AUTH,
                )
            )
            if booking not in self.live:
                assert reply.status_code == 409, reply.text
                return
            _, _, name, service, day = self.live[booking]
            if service != DROP or day != 0:  # a timed booking; a time not of the drop-off's day
                assert reply.status_code == 422, reply.text
                return
            if self.who(hour, bay, DROP, moving=booking, first=(name,)) != name:
                assert reply.status_code == 409, (reply.text, self.live)
                return
            assert reply.status_code == 200, (reply.text, self.live)
            assert reply.json()["bay_id"] == self.bay_ids[bay]
            assert len(reply.json()["slot_ids"]) == 2
            self.live[booking] = (hour, bay, name, DROP, day)

        @invariant()
        def database_agrees(self) -> None:
            async def claims() -> tuple[list[tuple[str, int]], dict[tuple[int, str], int]]:
                async with self.engine.connect() as conn:
                    held = await conn.execute(
                        text(
                            "SELECT tc.booking_id, ts.technician_id FROM technician_claims tc"
                            " JOIN technician_slots ts ON ts.id = tc.technician_slot_id"
                            " WHERE tc.active"
                            " UNION ALL SELECT bs.booking_id, -s.bay_id FROM booking_slots bs"
                            " JOIN slots s ON s.id = bs.slot_id WHERE bs.active"
                        )
                    )
                    minutes = await conn.execute(
                        text(
                            "SELECT technician_id, day, minutes_booked FROM technician_days"
                            " WHERE minutes_booked > 0"
                        )
                    )
                    return [(r[0], r[1]) for r in held], {
                        (r[0], str(r[1])): int(r[2]) for r in minutes
                    }

            held, minutes = self.run(claims())
            names = {tid: name for name, tid in self.ids.items()}
            # Each hour a booking holds: one claim on its technician and one on its bay
            # (negative: a bay's id).
            assert sorted((b, names[t] if t > 0 else f"bay {-t}") for b, t in held) == sorted(
                (b, holder)
                for b, (h, bay, t, s, _) in self.live.items()
                for _ in held_hours(h, s)
                for holder in (t, f"bay {self.bay_ids[bay]}")
            )
            for name, tid in self.ids.items():
                for index, day in enumerate(self.days):
                    mine = sum(
                        MINUTES[s]
                        for _, _, t, s, d in self.live.values()
                        if t == name and d == index
                    )
                    assert minutes.get((tid, day.isoformat()), 0) == mine <= WORKING

    return Technicians


@pytest.mark.slow
def test_technicians_are_never_booked_twice_under_random_sequences(stack: Stack) -> None:
    machine = make_machine(stack)
    machine.TestCase.settings = settings(
        max_examples=int(os.environ.get("STATEFUL_EXAMPLES", "25")),
        stateful_step_count=20,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
    )
    machine.TestCase().runTest()
