"""Random sequences of hold, book (with and without a hold, with Idempotency-Key retries),
move, cancel and rebook, for services of one and three hours, against the real app on SQLite and on
PostgreSQL + Redis — checked after every step against a simple model of DESIGN.md's rules:
a time is booked at most once (counting every slot a booking covers), a hold keeps a time for
its holder only, a retry returns the original booking, a cancel or a move frees the old time at
once, and a move into a time that is not free changes nothing."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Coroutine
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
from tests.support.api import booking_body
from tests.support.stack import ADMIN_TOKEN, Stack, reset_database

ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

T = TypeVar("T")
SLOTS_IN_PLAY = 5  # consecutive hours on one bay, one day
DURATION = {"MOT": 1, "Full service": 3}  # hours, so slots


def make_machine(stack: Stack) -> type[RuleBasedStateMachine]:
    class Bookings(RuleBasedStateMachine):
        holds = Bundle("holds")
        bookings = Bundle("bookings")
        keys = Bundle("keys")

        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.run(reset_database(stack.database_url))
            prefix = f"gbstate:{uuid.uuid4().hex[:8]}:"
            self.app = create_app(stack.settings(redis_key_prefix=prefix))

            async def start() -> LifespanManager:
                lifespan = LifespanManager(self.app)  # needs a running loop
                await lifespan.__aenter__()
                return lifespan

            self.lifespan = self.run(start())
            self.api = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=self.lifespan.app), base_url="http://t"
            )
            self.engine = create_async_engine(stack.database_url)
            services = self.run(self.api.get("/api/services")).json()
            self.service_ids = {s["name"]: s["id"] for s in services}
            slots = self.run(
                self.api.get("/api/slots", params={"available": "true", "limit": 1000})
            ).json()
            first = next(s for s in slots if s["starts_at"][11:16] == "08:00")
            self.slots = [
                s["id"]
                for s in slots
                if s["bay_id"] == first["bay_id"] and s["starts_at"][:10] == first["starts_at"][:10]
            ][:SLOTS_IN_PLAY]
            # The model: who has which slot.
            self.booked: dict[int, str] = {}  # slot -> booking id
            self.covers: dict[str, list[int]] = {}  # active booking -> its slots
            self.held: dict[int, str] = {}  # slot -> hold token
            self.replies: dict[str, tuple[dict[str, Any], str]] = {}  # key -> (body, booking)
            self.manage: dict[str, tuple[str, str]] = {}  # booking -> (cancel token, service)

        def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
            return self.loop.run_until_complete(coroutine)

        def teardown(self) -> None:
            self.run(self.api.aclose())
            self.run(self.lifespan.__aexit__(None, None, None))
            self.run(self.engine.dispose())
            self.loop.close()

        def covered(self, start: int, service: str) -> list[int] | None:
            index = self.slots.index(start)
            run = self.slots[index : index + DURATION[service]]
            # The pool's last slots may be followed by more of that day's: a plan reaching past
            # the pool is not predicted, only checked against the model once answered.
            return run if len(run) == DURATION[service] else None

        def free_for(self, slots: list[int], token: str | None) -> bool:
            return all(
                s not in self.booked and self.held.get(s, token) in (None, token) for s in slots
            )

        @rule(
            target=holds,
            index=st.integers(0, SLOTS_IN_PLAY - 1),
            service=st.sampled_from(list(DURATION)),
        )
        def hold(self, index: int, service: str) -> str:
            start = self.slots[index]
            slots = self.covered(start, service)
            reply = self.run(
                self.api.post(
                    "/api/holds", json={"slot_id": start, "service_id": self.service_ids[service]}
                )
            )
            if slots is not None:
                expected = 201 if self.free_for(slots, None) else 409
                assert reply.status_code == expected, reply.text
            assert reply.status_code in (201, 409)
            if reply.status_code != 201:
                return "none"
            token: str = reply.json()["hold_token"]
            for s in reply.json()["slot_ids"]:
                assert self.free_for([s], None), "held a time that was not free"
                self.held[s] = token
            return token

        @rule(
            target=bookings,
            index=st.integers(0, SLOTS_IN_PLAY - 1),
            service=st.sampled_from(list(DURATION)),
            token=st.one_of(st.none(), holds),
            key=st.one_of(st.none(), st.uuids().map(str)),
        )
        def book(self, index: int, service: str, token: str | None, key: str | None) -> str:
            start = self.slots[index]
            slots = self.covered(start, service)
            body = booking_body(start, service_id=self.service_ids[service])
            if token not in (None, "none"):
                body["hold_token"] = token
            headers = {"Idempotency-Key": key} if key else {}
            reply = self.run(self.api.post("/api/bookings", json=body, headers=headers))
            held_by = body.get("hold_token")
            if slots is not None:
                expected = 201 if self.free_for(slots, held_by) else 409
                assert reply.status_code == expected, (reply.text, self.booked, self.held)
            assert reply.status_code in (201, 409)
            if reply.status_code != 201:
                if held_by is not None and reply.json()["error"]["rejected_by"] == "database":
                    # Refused by the database: the hold's keys are released with it.
                    self.held = {s: t for s, t in self.held.items() if t != held_by}
                return "none"
            assert self.free_for(reply.json()["slot_ids"], held_by), "booked a time not free"
            self.record(reply.json(), held_by)
            self.manage.setdefault(reply.json()["id"], (reply.json()["cancel_token"], service))
            if key:
                self.replies[key] = (body, reply.json()["id"])
            return str(reply.json()["id"])

        def record(self, booking: dict[str, Any], token: str | None) -> None:
            for s in booking["slot_ids"]:
                assert s not in self.booked, "double booking"
                self.booked[s] = booking["id"]
                self.held.pop(s, None)
            if token:
                self.held = {s: t for s, t in self.held.items() if t != token}
            self.covers[booking["id"]] = booking["slot_ids"]

        @rule(booking=bookings)
        def cancel(self, booking: str) -> None:
            if booking == "none":
                return
            reply = self.run(self.api.post(f"/api/bookings/{booking}/cancel", headers=ADMIN_AUTH))
            if booking in self.covers:
                assert reply.status_code == 200, reply.text
                for s in self.covers.pop(booking):
                    del self.booked[s]
            else:
                assert reply.status_code == 409

        @rule(booking=bookings, index=st.integers(0, SLOTS_IN_PLAY - 1))
        def move(self, booking: str, index: int) -> None:
            if booking == "none":
                return
            token, service = self.manage[booking]
            start = self.slots[index]
            slots = self.covered(start, service)
            reply = self.run(
                self.api.post(f"/api/manage/{token}/reschedule", json={"slot_id": start})
            )
            if booking not in self.covers:
                assert reply.status_code == 409, reply.text  # cancelled
                return
            mine = set(self.covers[booking])
            if slots is not None:
                others = [s for s in slots if s not in mine]
                expected = 200 if self.free_for(others, None) else 409
                assert reply.status_code == expected, (reply.text, self.booked, self.held)
            assert reply.status_code in (200, 409), reply.text
            if reply.status_code != 200:
                return
            moved = reply.json()
            assert moved["id"] == booking
            others = [s for s in moved["slot_ids"] if s not in mine]
            assert self.free_for(others, None), "moved into a time that was not free"
            for s in self.covers.pop(booking):
                del self.booked[s]
            self.record(moved, None)

        @rule(token=holds)
        def release(self, token: str) -> None:
            if token == "none":
                return
            assert self.run(self.api.delete(f"/api/holds/{token}")).status_code == 204
            self.held = {s: t for s, t in self.held.items() if t != token}

        @rule(data=st.data())
        def retry(self, data: st.DataObject) -> None:
            if not self.replies:
                return
            key = data.draw(st.sampled_from(sorted(self.replies)))
            body, booking_id = self.replies[key]
            reply = self.run(
                self.api.post("/api/bookings", json=body, headers={"Idempotency-Key": key})
            )
            if booking_id not in self.covers:  # cancelled since: the replay says so
                assert reply.status_code == 409, reply.text
                assert reply.json()["error"]["code"] == "idempotent_booking_closed"
                assert reply.json()["error"]["booking_id"] == booking_id
                return
            assert reply.status_code == 201
            assert reply.json()["id"] == booking_id
            assert reply.json()["slot_ids"] == self.covers[booking_id]  # as it is now

        @invariant()
        def database_agrees(self) -> None:
            async def live() -> dict[int, str]:
                async with self.engine.connect() as conn:
                    rows = await conn.execute(
                        text("SELECT slot_id, booking_id FROM booking_slots WHERE active")
                    )
                    return {row.slot_id: row.booking_id for row in rows}

            claims = self.run(live())
            in_play = {s: b for s, b in claims.items() if s in self.slots}
            assert in_play == {s: b for s, b in self.booked.items() if s in self.slots}

    return Bookings


@pytest.mark.slow
def test_booking_rules_hold_under_random_sequences(stack: Stack) -> None:
    machine = make_machine(stack)
    machine.TestCase.settings = settings(
        max_examples=int(os.environ.get("STATEFUL_EXAMPLES", "40")),
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        # No shrinking: on this app it can take minutes; the failing steps print as they ran.
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
    )
    machine.TestCase().runTest()
