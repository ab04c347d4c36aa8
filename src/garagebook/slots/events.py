""" "A time may have freed up on this day": an event of the booking core (a cancel, a move, a
new slot; a reassignment or a withdrawn absence freeing a technician), raised inside the
transaction that made the change, for whatever builds on the core to act on in that same
transaction (the waitlist queues its matching: waitlist/triggers.py).

The core does not know who listens: `bookings` and `slots` never import the waitlist
(tests/test_outbox.py checks it), the waitlist subscribes with `on_time_freed`. It lives here,
in the lowest layer that raises it, so that `slots` and `bookings` both can without a cycle."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

# (connection, local day, now, when to act: None = now)
TimeFreedListener = Callable[[AsyncConnection, date, datetime, datetime | None], Awaitable[None]]

ListenerT = TypeVar("ListenerT", bound=TimeFreedListener)
_listeners: list[TimeFreedListener] = []


def on_time_freed(listener: ListenerT) -> ListenerT:
    """Subscribe (a decorator): `listener` runs in the transaction of every change that frees
    a time, and stands or falls with it."""
    if listener not in _listeners:
        _listeners.append(listener)
    return listener


async def time_freed(
    conn: AsyncConnection, day: date, now: datetime, run_at: datetime | None = None
) -> None:
    for listener in _listeners:
        await listener(conn, day, now, run_at)
