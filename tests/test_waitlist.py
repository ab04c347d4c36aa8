"""The cancellation waitlist, end to end (real worker, real SMTP server, frozen clock) and its
race: one freed time is offered to one person at a time, first come first served; an offer
that runs out passes on; two times freed at once go to two different people. The control
shows that without the serialization and the unique indexes the same time goes to several.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
import time_machine
from sqlalchemy import text

from garagebook.db import Database, create_engine
from garagebook.reservations import LayerStatus, Outcome
from garagebook.timeutil import utcnow
from garagebook.waitlist import service as waitlist
from tests.support.api import book_as, booking_body, open_admin_slot, wait_until
from tests.support.mail import ReceivedMail, SmtpSink, mail_settings, running_app
from tests.support.stack import ADMIN_TOKEN, Stack

SQL = Callable[..., Awaitable[list[Any]]]
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CLOCK = datetime(2027, 6, 1, 8, 0, tzinfo=UTC)  # a Tuesday
SUNDAY = date(2027, 6, 6)  # the demo garage has no slots on Sundays: the test opens them
WAITERS = ["first@example.com", "second@example.com", "third@example.com"]


async def open_slot(api: httpx.AsyncClient, hour: int, bay_id: int = 1) -> int:
    """A slot on SUNDAY at `hour` UTC."""
    start = datetime(SUNDAY.year, SUNDAY.month, SUNDAY.day, hour, tzinfo=UTC)
    return await open_admin_slot(api, start, bay_id)


async def join(
    api: httpx.AsyncClient, email: str, service_id: int = 1, day: date = SUNDAY
) -> dict[str, Any]:
    response = await api.post(
        "/api/waitlist",
        json={
            "service_id": service_id,
            "day": day.isoformat(),
            "customer": {"name": email.split("@")[0].title(), "email": email},
            "vehicle": {"registration": "ab12cde"},
        },
    )
    assert response.status_code == 201, response.text
    entry: dict[str, Any] = response.json()
    return entry


def offers_in(sink: SmtpSink) -> list[ReceivedMail]:
    return [m for m in sink.mails if str(m.message["Subject"]).startswith("A time came free")]


def link_of(mail: ReceivedMail) -> str:
    [url] = [word for word in mail.text().split() if "/waitlist/offers/" in word]
    return url.rsplit("/", 1)[1]


async def entry_states(sql: SQL) -> list[tuple[str, str]]:
    rows = await sql("SELECT customer_email, status FROM waitlist_entries ORDER BY id")
    return [(email, status) for email, status in rows]


async def jobs_settled(sql: SQL) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        rows = await sql(
            "SELECT count(*) FROM outbox WHERE status IN ('pending', 'running') "
            "AND run_at <= :now AND kind <> 'booking_reminder'",
            now=utcnow(),
        )
        return rows == [(0,)]

    return check


@asynccontextmanager
async def garage(stack: Stack, sink: SmtpSink) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(mail_settings(stack, sink)) as api:
        yield api


async def test_three_waiting_one_cancellation_one_offer_then_it_passes_on_when_it_runs_out(
    stack: Stack, smtp_sink: SmtpSink, sql: SQL
) -> None:
    with time_machine.travel(CLOCK, tick=True) as traveller:
        async with garage(stack, smtp_sink) as api:
            slot = await open_slot(api, 9)
            taken = await book_as(api, slot, "early@example.com")
            entries = [await join(api, email) for email in WAITERS]
            assert [e["position"] for e in entries] == [1, 2, 3]
            await wait_until(await jobs_settled(sql), 10, "the join's matching")
            assert offers_in(smtp_sink) == [], "nothing is free: nobody is offered anything"

            cancelled = await api.post(f"/api/manage/{taken['cancel_token']}/cancel")
            assert cancelled.status_code == 200
            await wait_until(lambda: _count(smtp_sink, 1), 10, "the offer mail")
            await asyncio.sleep(0.5)  # a second offer, if one were made, would be here by now
            [offer_mail] = offers_in(smtp_sink)
            assert offer_mail.recipients == ["first@example.com"]
            assert "09:00–10:00 (GMT)" not in offer_mail.text()  # June: BST
            assert "10:00–11:00 (BST)" in offer_mail.text()
            assert await entry_states(sql) == [
                ("first@example.com", "offered"),
                ("second@example.com", "waiting"),
                ("third@example.com", "waiting"),
            ]
            # The time is held for the first person: nobody else can book it meanwhile.
            refused = await api.post("/api/bookings", json=booking_body(slot))
            assert refused.status_code == 409
            first_link = link_of(offer_mail)
            shown = (await api.get(f"/api/waitlist/offers/{first_link}")).json()
            assert shown["status"] == "open"
            assert shown["starts_at"] == "2027-06-06T10:00:00+01:00"

            # 31 minutes later the first person has not answered: the time passes on.
            traveller.move_to(CLOCK + timedelta(minutes=31))
            await wait_until(lambda: _count(smtp_sink, 2), 10, "the second offer")
            second_mail = offers_in(smtp_sink)[1]
            assert second_mail.recipients == ["second@example.com"]
            assert await entry_states(sql) == [
                ("first@example.com", "lapsed"),
                ("second@example.com", "offered"),
                ("third@example.com", "waiting"),
            ]
            late = await api.post(f"/api/waitlist/offers/{first_link}/confirm")
            assert late.status_code == 409
            assert late.json()["error"]["code"] == "offer_gone"

            # One click books it for the second person, once.
            second_link = link_of(second_mail)
            booked = await api.post(f"/api/waitlist/offers/{second_link}/confirm")
            assert booked.status_code == 201, booked.text
            booking = booked.json()
            assert booking["customer"]["email"] == "second@example.com"
            assert booking["slot_id"] == slot
            assert booking["cancel_token"]
            again = await api.post(f"/api/waitlist/offers/{second_link}/confirm")
            assert again.status_code == 409
            assert await sql("SELECT customer_email FROM bookings WHERE status = 'confirmed'") == [
                ("second@example.com",)
            ]
            assert (await entry_states(sql))[1] == ("second@example.com", "booked")
            await asyncio.sleep(0.5)
            assert len(offers_in(smtp_sink)) == 2, "the third person was never offered it"


async def test_two_times_freed_at_once_go_to_two_different_people(
    stack: Stack, smtp_sink: SmtpSink, sql: SQL
) -> None:
    with time_machine.travel(CLOCK, tick=True):
        async with garage(stack, smtp_sink) as api:
            slots = [await open_slot(api, 9, bay_id=1), await open_slot(api, 9, bay_id=2)]
            bookings = [await book_as(api, s, f"early{i}@example.com") for i, s in enumerate(slots)]
            for email in WAITERS:
                await join(api, email)
            answers = await asyncio.gather(
                *(api.post(f"/api/manage/{b['cancel_token']}/cancel") for b in bookings)
            )
            assert [a.status_code for a in answers] == [200, 200]
            await wait_until(lambda: _count(smtp_sink, 2), 10, "two offers")
            await wait_until(await jobs_settled(sql), 10, "the matching jobs")
            mails = offers_in(smtp_sink)
            assert sorted(m.recipients[0] for m in mails) == WAITERS[:2]
            offered = await sql("SELECT slot_id FROM waitlist_offers WHERE status = 'open'")
            assert sorted(s for (s,) in offered) == sorted(slots)
            assert (await entry_states(sql))[2] == ("third@example.com", "waiting")


def _count(sink: SmtpSink, offers: int) -> Awaitable[bool]:
    async def check() -> bool:
        return len(offers_in(sink)) >= offers

    return check()


# --- the race itself, at the matching function, with the reservation layer down ------------


class ReservationsDown:
    """What the reservation layer answers while Redis is unreachable: nothing held, go on."""

    def status(self) -> LayerStatus:
        return "degraded"

    async def reserve(self, slot_ids: Sequence[int], token: str, ttl_ms: int) -> Outcome:
        return Outcome.SKIPPED

    async def release(self, slot_ids: Sequence[int], token: str) -> None:
        return None

    async def forget(self, slot_ids: Sequence[int]) -> None:
        return None

    async def close(self) -> None:
        return None


async def race_matchers(stack: Stack, api: httpx.AsyncClient, matchers: int) -> None:
    """Two free times and three people waiting, then `matchers` matchings of that day at once."""
    for bay in (1, 2):
        await open_slot(api, 9, bay_id=bay)
    for email in WAITERS:
        await join(api, email)
    settings = stack.settings()
    databases = [Database(create_engine(settings)) for _ in range(matchers)]
    try:
        # The joins' own matching jobs are not run here (no worker): this is the only matching.
        await asyncio.gather(
            *(
                waitlist.match_day(db, ReservationsDown(), settings, SUNDAY, utcnow())
                for db in databases
            )
        )
    finally:
        for db in databases:
            await db.dispose()


async def open_offers(sql: SQL) -> list[tuple[int, int]]:
    rows = await sql("SELECT entry_id, slot_id FROM waitlist_offers WHERE status = 'open'")
    return [(entry, slot) for entry, slot in rows]


def assert_one_person_per_time(offers: list[tuple[int, int]]) -> None:
    assert len(offers) == 2, offers
    assert len({slot for _, slot in offers}) == 2
    assert len({entry for entry, _ in offers}) == 2


async def test_concurrent_matching_offers_each_time_to_one_person(
    stack: Stack, api: httpx.AsyncClient, sql: SQL
) -> None:
    with time_machine.travel(CLOCK, tick=True):
        await race_matchers(stack, api, matchers=6)
    offers = await open_offers(sql)
    assert_one_person_per_time(offers)
    first_two = [i for (i,) in await sql("SELECT id FROM waitlist_entries ORDER BY id LIMIT 2")]
    assert sorted(entry for entry, _ in offers) == first_two  # first come, first served


async def test_without_the_lock_the_unique_indexes_still_hold(
    stack: Stack, api: httpx.AsyncClient, sql: SQL, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(waitlist, "_serialize", _no_lock)
    with time_machine.travel(CLOCK, tick=True):
        await race_matchers(stack, api, matchers=6)
    assert_one_person_per_time(await open_offers(sql))


# PostgreSQL only: SQLite's write transactions are exclusive, so matchers cannot interleave.
@pytest.mark.parametrize("stack", ["postgres"], indirect=True)
async def test_control_without_lock_and_indexes_a_time_goes_to_several_people(
    stack: Stack, api: httpx.AsyncClient, sql: SQL, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(waitlist, "_serialize", _no_lock)
    await _run_ddl(stack, DROP_OFFER_INDEXES)
    try:
        with time_machine.travel(CLOCK, tick=True):
            await race_matchers(stack, api, matchers=6)
        offers = await open_offers(sql)
        assert len(offers) > 2, "without the protection the same times go to several people"
    finally:
        await _run_ddl(stack, ["TRUNCATE waitlist_offers", *CREATE_OFFER_INDEXES])


DROP_OFFER_INDEXES = [
    "DROP INDEX uq_waitlist_offers_slot_id_open",
    "DROP INDEX uq_waitlist_offers_entry_id_open",
]
CREATE_OFFER_INDEXES = [
    "CREATE UNIQUE INDEX uq_waitlist_offers_slot_id_open ON waitlist_offers (slot_id) "
    "WHERE status = 'open'",
    "CREATE UNIQUE INDEX uq_waitlist_offers_entry_id_open ON waitlist_offers (entry_id) "
    "WHERE status = 'open'",
]


async def _run_ddl(stack: Stack, statements: list[str]) -> None:
    engine = create_engine(stack.settings())
    try:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def _no_lock(conn: Any) -> None:
    return None


async def test_a_time_held_by_a_customer_who_gives_up_still_reaches_the_waitlist(
    stack: Stack, smtp_sink: SmtpSink, sql: SQL
) -> None:
    """A hold that simply expires frees nothing anyone is told about: matching that found the
    time held looks again once such a hold has run out (it used to wait for the next cancel)."""
    with time_machine.travel(CLOCK, tick=True):
        async with running_app(mail_settings(stack, smtp_sink, hold_ttl_seconds=2)) as api:
            slot = await open_slot(api, 9)
            held = await api.post("/api/holds", json={"slot_id": slot, "service_id": 1})
            assert held.status_code == 201
            await join(api, "first@example.com")
            await wait_until(lambda: _count(smtp_sink, 1), 15, "the offer once the hold ran out")
            [offer] = offers_in(smtp_sink)
            assert offer.recipients == ["first@example.com"]
            assert await open_offers(sql) == [(1, slot)]


async def test_the_offer_link_leaves_the_outbox_once_sent(
    stack: Stack, smtp_sink: SmtpSink, sql: SQL
) -> None:
    """Issue 18, finding 7: the offer mail's job kept the link's token in its payload for good.
    Once the worker has sent it, the payload no longer holds it; the link itself still works."""
    with time_machine.travel(CLOCK, tick=True):
        async with garage(stack, smtp_sink) as api:
            slot = await open_slot(api, 9)
            taken = await book_as(api, slot, "early@example.com")
            await join(api, "first@example.com")
            cancelled = await api.post(f"/api/manage/{taken['cancel_token']}/cancel")
            assert cancelled.status_code == 200
            await wait_until(lambda: _count(smtp_sink, 1), 10, "the offer mail")
            link = link_of(offers_in(smtp_sink)[0])

            async def offer_job_done() -> bool:
                rows = await sql(
                    "SELECT status FROM outbox WHERE kind = :kind", kind=waitlist.OFFERED_KIND
                )
                return rows == [("done",)]

            await wait_until(offer_job_done, 10, "the offer job recorded done")
            [(payload,)] = await sql(
                "SELECT payload FROM outbox WHERE kind = :kind", kind=waitlist.OFFERED_KIND
            )
            assert link not in payload
            assert "token" not in json.loads(payload)
            assert json.loads(payload)["offer_id"] >= 1
            booked = await api.post(f"/api/waitlist/offers/{link}/confirm")
            assert booked.status_code == 201, booked.text


# --- in a garage with technicians (issue 15) ----------------------------------------------


THURSDAY = date(2027, 6, 3)


async def _an_mot_offer_keeping_priya(
    stack: Stack, smtp_sink: SmtpSink, sql: SQL, api: httpx.AsyncClient
) -> tuple[int, dict[str, Any], dict[str, Any], str]:
    """Priya, the only MOT tester, works one hour a day and is booked on THURSDAY: the bays
    are free all day, but nobody could do a waiting customer's MOT, so nobody is offered one
    (an offer used to go out for the first free bay, and its booking then failed). Her booking
    cancelled, the offer comes, and keeps her. Returns her id, the waiting entry, the slot of
    another bay at the offered time, and the offer's link."""
    from tests.support.technicians import MOT, add_technicians, body

    ids = await add_technicians(
        stack.database_url, ("Priya", "mot_tester,general"), minutes_a_day=60
    )
    day = {"date": THURSDAY.isoformat()}
    listed = await api.get("/api/availability", params={"service_id": MOT, **day})
    starts = [s["starts_at"] for s in listed.json()]
    assert starts, listed.text
    slots = (await api.get("/api/slots", params={**day, "limit": 300})).json()
    ten = next(s for s in slots if s["starts_at"] == starts[2] and s["bay_id"] == 1)
    taken = await api.post("/api/bookings", json=body(ten["id"], MOT, 1))
    assert taken.status_code == 201, taken.text
    assert taken.json()["technician_id"] == ids["Priya"]

    entry = await _wait_for_an_mot_on_thursday(api, sql, smtp_sink)
    assert await entry_states(sql) == [("first@example.com", "waiting")]

    cancel = await api.post(f"/api/manage/{taken.json()['cancel_token']}/cancel")
    assert cancel.status_code == 200
    await wait_until(lambda: _count(smtp_sink, 1), 10, "the offer mail")
    [(token, offered_slot)] = await sql(
        "SELECT hold_token, slot_id FROM waitlist_offers WHERE status = 'open'"
    )
    assert token.endswith(f".t{ids['Priya']}")
    offered = next(s for s in slots if s["id"] == offered_slot)
    other_bay = next(
        s for s in slots if s["starts_at"] == offered["starts_at"] and s["id"] != offered_slot
    )
    return ids["Priya"], entry, other_bay, link_of(offers_in(smtp_sink)[0])


async def test_an_offer_comes_only_with_a_technician_free_and_keeps_them(
    stack: Stack, smtp_sink: SmtpSink, sql: SQL
) -> None:
    """While the offer lasts, a stranger's MOT on another bay at that time is turned away (the
    offer keeps Priya); the offer's booking gets her."""
    from tests.support.technicians import MOT, body

    with time_machine.travel(CLOCK, tick=True):
        async with garage(stack, smtp_sink) as api:
            priya, _, other_bay, link = await _an_mot_offer_keeping_priya(
                stack, smtp_sink, sql, api
            )
            stranger = await api.post("/api/bookings", json=body(other_bay["id"], MOT, 2))
            assert stranger.status_code == 409, stranger.text
            assert stranger.json()["error"]["rejected_by"] == "reservation"

            booked = await api.post(f"/api/waitlist/offers/{link}/confirm")
            assert booked.status_code == 201, booked.text
            assert booked.json()["technician_id"] == priya
            assert booked.json()["starts_at"] == other_bay["starts_at"]


async def test_leaving_with_an_offer_lets_its_technician_go_at_once(
    stack: Stack, smtp_sink: SmtpSink, sql: SQL
) -> None:
    from tests.support.technicians import MOT, body

    with time_machine.travel(CLOCK, tick=True):
        async with garage(stack, smtp_sink) as api:
            priya, entry, other_bay, _ = await _an_mot_offer_keeping_priya(
                stack, smtp_sink, sql, api
            )
            left = await api.delete(f"/api/waitlist/{entry['leave_token']}")
            assert left.status_code == 204, left.text
            stranger = await api.post("/api/bookings", json=body(other_bay["id"], MOT, 2))
            assert stranger.status_code == 201, stranger.text
            assert stranger.json()["technician_id"] == priya


async def _wait_for_an_mot_on_thursday(
    api: httpx.AsyncClient, sql: SQL, sink: SmtpSink
) -> dict[str, Any]:
    """A customer joins THURSDAY's waitlist for an MOT, and is offered nothing (yet)."""
    from tests.support.technicians import MOT

    entry = await join(api, "first@example.com", MOT, THURSDAY)
    await wait_until(await jobs_settled(sql), 10, "the matching")
    assert offers_in(sink) == [], "no MOT tester free on Thursday: nothing to offer yet"
    return entry


async def test_a_technician_freed_by_a_reassignment_reaches_the_waitlist(
    stack: Stack, smtp_sink: SmtpSink, sql: SQL
) -> None:
    """Sam (general) and Priya (MOT tester) work one hour a day. Thursday's two oil changes
    take both; a waiting MOT has no tester. Sam's is cancelled (matching runs: still no
    tester), then staff move Priya's oil change to Sam: Priya is free, and the waiting
    customer is offered the MOT (a reassignment used to free a time nobody was told of)."""
    from tests.support.technicians import OIL, add_technicians, body

    with time_machine.travel(CLOCK, tick=True):
        async with garage(stack, smtp_sink) as api:
            ids = await add_technicians(
                stack.database_url,
                ("Sam", "general"),
                ("Priya", "mot_tester,general"),
                minutes_a_day=60,
            )
            day = {"date": THURSDAY.isoformat()}
            slots = (await api.get("/api/slots", params={**day, "limit": 300})).json()
            times = sorted({s["starts_at"] for s in slots})
            booked = []
            for i, at in enumerate(times[2:4]):
                slot = next(s for s in slots if s["starts_at"] == at and s["bay_id"] == 2)
                answer = await api.post("/api/bookings", json=body(slot["id"], OIL, i))
                assert answer.status_code == 201, answer.text
                booked.append(answer.json())
            assert [b["technician_id"] for b in booked] == [ids["Sam"], ids["Priya"]]
            await _wait_for_an_mot_on_thursday(api, sql, smtp_sink)

            cancel = await api.post(f"/api/manage/{booked[0]['cancel_token']}/cancel")
            assert cancel.status_code == 200
            await wait_until(await jobs_settled(sql), 10, "the cancel's matching")
            assert offers_in(smtp_sink) == [], "Sam is free, but he is no MOT tester"

            moved = await api.post(
                f"/api/admin/bookings/{booked[1]['id']}/reassign",
                json={"technician_id": ids["Sam"]},
                headers=AUTH,
            )
            assert moved.status_code == 200, moved.text
            await wait_until(lambda: _count(smtp_sink, 1), 10, "the offer once Priya is free")
            [(token,)] = await sql("SELECT hold_token FROM waitlist_offers WHERE status = 'open'")
            assert token.endswith(f".t{ids['Priya']}")


async def test_a_withdrawn_absence_reaches_the_waitlist(
    stack: Stack, smtp_sink: SmtpSink, sql: SQL
) -> None:
    """Priya, the only MOT tester, is off on Thursday: a waiting MOT has no tester. Her
    absence withdrawn, she works that day again, and the waiting customer is offered it."""
    from tests.support.technicians import add_technicians

    with time_machine.travel(CLOCK, tick=True):
        async with garage(stack, smtp_sink) as api:
            ids = await add_technicians(stack.database_url, ("Priya", "mot_tester,general"))
            entered = await api.post(
                "/api/admin/absences",
                json={
                    "technician_id": ids["Priya"],
                    "first_day": THURSDAY.isoformat(),
                    "last_day": THURSDAY.isoformat(),
                    "reason": "holiday",
                },
                headers=AUTH,
            )
            assert entered.status_code == 201, entered.text
            await _wait_for_an_mot_on_thursday(api, sql, smtp_sink)

            withdrawn = await api.delete(
                f"/api/admin/absences/{entered.json()['id']}", headers=AUTH
            )
            assert withdrawn.status_code == 200, withdrawn.text
            await wait_until(lambda: _count(smtp_sink, 1), 10, "the offer once Priya works")
            [(token,)] = await sql("SELECT hold_token FROM waitlist_offers WHERE status = 'open'")
            assert token.endswith(f".t{ids['Priya']}")
