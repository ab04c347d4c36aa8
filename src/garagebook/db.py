"""Engine and transactions. Transactions are opened and committed at the edge (routes, CLI,
the booking path's top level); the functions they call only execute statements."""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any

from sqlalchemy import Insert, Table, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from garagebook.config import Settings
from garagebook.errors import DatabaseUnavailable

# An execution option of the SQLite engine's readers: their transaction begins deferred.
_READ_ONLY = "garagebook_read_only"

# SQLSTATE classes that mean "the database cannot serve us now", not "this request is bad":
# connection exceptions, insufficient resources (too many connections), operator
# intervention (shutting down, starting up), system errors.
_UNAVAILABLE_SQLSTATES = ("08", "53", "57P", "58")


def is_unavailable(error: DBAPIError) -> bool:
    if isinstance(error, OperationalError | InterfaceError) or error.connection_invalidated:
        return True
    sqlstate = str(getattr(error.orig, "pgcode", None) or "")
    return sqlstate.startswith(_UNAVAILABLE_SQLSTATES)


@asynccontextmanager
async def _unavailable_as_503() -> AsyncIterator[None]:
    """A database that cannot be reached becomes `DatabaseUnavailable` (503), never a 500."""
    try:
        yield
    except DBAPIError as exc:
        if is_unavailable(exc):
            raise DatabaseUnavailable() from exc
        raise
    except (PoolTimeout, TimeoutError, ConnectionError, OSError) as exc:
        raise DatabaseUnavailable() from exc


# The availability cache's fingerprint reads (slots/cache.py) get a few connections of their
# own, on which PostgreSQL plans each statement once. By default it plans a prepared statement
# anew on every call while its custom plan is estimated cheaper than the generic one, and for
# that statement planning (0.45-0.55 ms) cost three times what running it did (0.16 ms for a
# day unchanged since its last read; 0.79 → 0.30 ms a call with one plan kept, measured on the
# bench's garage). Not for every statement: with generic plans everywhere the next 50 free
# times and the booking page answered slower in the same bench run.
GENERIC_PLAN_POOL_SIZE = 4


def create_engine(settings: Settings, *, generic_plans: bool = False) -> AsyncEngine:
    """The engine of `settings.database_url`; `generic_plans`: a small PostgreSQL pool of
    autocommit connections that plan each prepared statement once (see above)."""
    if settings.is_sqlite:
        return _create_sqlite_engine(settings)
    pool_size = GENERIC_PLAN_POOL_SIZE if generic_plans else settings.database_pool_size
    engine = create_async_engine(
        settings.database_url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=settings.database_timeout_seconds,
        connect_args={
            "timeout": settings.database_timeout_seconds,
            **(
                {"server_settings": {"plan_cache_mode": "force_generic_plan"}}
                if generic_plans
                else {}
            ),
        },
        hide_parameters=True,  # an error message must never carry a customer's data
        **({"isolation_level": "AUTOCOMMIT"} if generic_plans else {}),
    )

    _CONNECTIONS[engine.sync_engine] = TurnQueue(
        f"pool:{id(engine.sync_engine)}", pool_size, settings.database_timeout_seconds
    )

    @event.listens_for(engine.sync_engine, "checkout")
    def _skip_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        # A pooled connection the server closed (a restart, a failover, an administrator's
        # pg_terminate_backend) is known closed to asyncpg as soon as the event loop saw the
        # socket end: replace it now, at no cost, instead of failing the request that gets it.
        if dbapi_connection.driver_connection.is_closed():
            raise DisconnectionError("pooled connection closed by the server")

    return engine


def _create_sqlite_engine(settings: Settings) -> AsyncEngine:
    engine = create_async_engine(
        settings.database_url,
        pool_timeout=settings.database_timeout_seconds,
        connect_args={"timeout": settings.database_timeout_seconds},
        hide_parameters=True,  # an error message must never carry a customer's data
    )
    busy_ms = int(settings.database_timeout_seconds * 1000)

    @event.listens_for(engine.sync_engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from the driver so BEGIN IMMEDIATE below is ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # a 201 survives power loss
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Any) -> None:
        # Writers queue for the lock at BEGIN (honouring busy_timeout) instead of failing with
        # SQLITE_BUSY when a read transaction tries to upgrade; SQLite allows one writer anyway.
        # Readers (`Database.read`) take no lock: in WAL mode they read their snapshot while a
        # writer writes, so they never wait for the write lock (issue 19: they did, and got 503).
        if connection.get_execution_options().get(_READ_ONLY):
            connection.exec_driver_sql("BEGIN DEFERRED")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    _WRITERS[engine.sync_engine] = TurnQueue(
        f"sqlite-writers:{engine.url}", 1, settings.database_timeout_seconds
    )
    return engine


class TurnQueue:
    """This process's callers for a scarce thing — SQLite's one write lock to a file, or one of
    a PostgreSQL pool's connections — taking it in turn, first come first served (issue 19).

    Neither waits in line on its own. A connection waiting for SQLite's lock sleeps in its busy
    handler and tries again, up to 100 ms apart, and whoever tries while the lock is free takes
    it: under a burst a waiter was passed over until its busy timeout ran out, with the lock
    free a quarter of that time. SQLAlchemy's pool does queue, but gives up after a fixed
    `pool_timeout`: 1,000 bookings at once on a 10-connection pool, each turn a few
    milliseconds, kept the last in line waiting past DATABASE_TIMEOUT_SECONDS on a loaded
    machine, and 7 of 3,000 got 503 while PostgreSQL answered every statement in time.

    DATABASE_TIMEOUT_SECONDS measures the database, not our own queue: a caller gives up (503)
    when no turn ended for that long, that is when the ones holding every turn are stuck, not
    because the queue ahead was long and kept moving. So the wait is bounded: at most one
    timeout per caller ahead, and there are at most MAX_CONCURRENCY requests and the worker's
    jobs, each of them a turn of real work.
    """

    def __init__(self, key: str, turns: int, timeout_seconds: float) -> None:
        self.key = key  # callers with the same key, in one event loop, share one queue
        self.turns = turns
        self.timeout_seconds = timeout_seconds

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        queues = _TURNS.setdefault(asyncio.get_running_loop(), {})
        turns = queues.get(self.key)
        if turns is None:
            turns = queues[self.key] = _Turns(self.turns)
        await turns.wait(self.timeout_seconds)
        try:
            yield
        finally:
            turns.done()


class _Turns:
    """A first-come-first-served queue of `free` turns whose waiters see it move (`ended`
    counts the turns that ended)."""

    def __init__(self, turns: int) -> None:
        self.free = turns
        self.ended = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    async def wait(self, stuck_seconds: float) -> None:
        if self.free:  # a free turn means nobody is waiting: a turn is handed on to a waiter
            self.free -= 1
            return
        mine = asyncio.get_running_loop().create_future()
        self._waiting.append(mine)
        try:
            while not mine.done():
                seen = self.ended
                await asyncio.wait([mine], timeout=stuck_seconds)
                if not mine.done() and self.ended == seen:
                    raise TimeoutError("no turn ended within DATABASE_TIMEOUT_SECONDS")
        except BaseException:
            if mine.done():  # the turn was handed to us just as we gave up: pass it on
                self._hand_on()
            else:
                self._waiting.remove(mine)
                mine.cancel()
            raise

    def done(self) -> None:
        self.ended += 1
        self._hand_on()

    def _hand_on(self) -> None:
        if self._waiting:
            self._waiting.popleft().set_result(None)  # the turn passes straight to them
        else:
            self.free += 1


_WRITERS: weakref.WeakKeyDictionary[Engine, TurnQueue] = weakref.WeakKeyDictionary()  # SQLite
_CONNECTIONS: weakref.WeakKeyDictionary[Engine, TurnQueue] = weakref.WeakKeyDictionary()  # PG
_TURNS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Turns]] = (
    weakref.WeakKeyDictionary()
)


def _turn(queue: TurnQueue | None) -> AbstractAsyncContextManager[None]:
    return queue.turn() if queue is not None else nullcontext()


@asynccontextmanager
async def _reading(reader: AsyncEngine, queue: TurnQueue | None) -> AsyncIterator[AsyncConnection]:
    """A read on `reader` (autocommit on PostgreSQL), in turn for its pool's connections."""
    async with _unavailable_as_503(), _turn(queue), reader.begin() as connection:
        yield connection


class Database:
    def __init__(self, engine: AsyncEngine, generic_plans: AsyncEngine | None = None) -> None:
        self.engine = engine
        self.generic_plans = generic_plans  # PostgreSQL: the fingerprint reads' own pool
        # PostgreSQL reads run in autocommit: one round trip per SELECT, no BEGIN/COMMIT.
        # SQLite reads run in a deferred transaction: one snapshot, no lock.
        self._reader = (
            engine.execution_options(**{_READ_ONLY: True})
            if engine.dialect.name == "sqlite"
            else engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        self._writers = _WRITERS.get(engine.sync_engine)  # SQLite only
        self._connections = _CONNECTIONS.get(engine.sync_engine)  # PostgreSQL only

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One transaction: committed when the block ends, rolled back on any exception."""
        # SQLite's turn spans BEGIN to COMMIT only: taking a pooled connection and handing it
        # back (its reset) need no lock, so the writers behind do not wait for them.
        async with (
            _unavailable_as_503(),
            _turn(self._connections),
            self.engine.connect() as connection,
            _turn(self._writers),
            connection.begin(),
        ):
            yield connection

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """For reads that need no snapshot across statements."""
        async with _reading(self._reader, self._connections) as connection:
            yield connection

    @asynccontextmanager
    async def read_planned_once(self) -> AsyncIterator[AsyncConnection]:
        """`read`, on a connection of the `generic_plans` pool where there is one."""
        if self.generic_plans is None:
            reading = _reading(self._reader, self._connections)
        else:
            reading = _reading(self.generic_plans, _CONNECTIONS.get(self.generic_plans.sync_engine))
        async with reading as connection:
            yield connection

    async def ping(self) -> bool:
        try:
            async with self.read() as connection:
                await connection.execute(text("SELECT 1"))
        except DatabaseUnavailable:
            return False
        return True

    def connections_in_use(self) -> int:
        checked_out = getattr(self.engine.pool, "checkedout", None)
        return int(checked_out()) if callable(checked_out) else 0

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.generic_plans is not None:
            await self.generic_plans.dispose()


def insert_ignoring_conflicts(connection: AsyncConnection, table: Table) -> Insert:
    """`INSERT … ON CONFLICT DO NOTHING`, in the dialect of the connection: a conflict is an
    answer ("no row came back"), not an exception."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


def upsert(connection: AsyncConnection, table: Table, key: str, update: list[str]) -> Insert:
    """`INSERT … ON CONFLICT (key) DO UPDATE SET col = excluded.col` for the columns in `update`."""
    dialect_insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    statement = dialect_insert(table)
    return statement.on_conflict_do_update(
        index_elements=[key], set_={name: statement.excluded[name] for name in update}
    )
