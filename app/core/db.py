"""Engine, session dependency and the column types every domain shares."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import DateTime, MetaData, event
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.types import TypeDecorator

from app.core.config import Settings
from app.core.context import note_commit
from app.core.metrics import measured_pool

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# The raw asyncpg connections of the hot paths (app/oidc/livecheck.py's pool, app/verify's
# identity checks) run a few fixed statements, each prepared once per connection. PostgreSQL
# plans a prepared statement anew on each of its first five executions, and from then on
# whenever its generic plan looks costlier than the custom ones, which the data-modifying CTEs
# of app/core/journal.py always do: ~250 µs of planning in every call (bench/token.py). These
# connections use the generic plan, made once; PostgreSQL makes it again after ANALYZE changes
# the tables' statistics, and after DDL.
RAW_SERVER_SETTINGS = {"plan_cache_mode": "force_generic_plan"}

# How long a new PostgreSQL connection, and one statement, may take before the request gives up
# (503). No statement of a request should come near it; the bulk importer has its own connection.
CONNECT_TIMEOUT_SECONDS = 5.0
COMMAND_TIMEOUT_SECONDS = 30.0


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite has no timezone type)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _committed(_session: Session) -> None:
    note_commit()


# A request whose transaction committed must not be answered "nothing was changed" if it fails
# afterwards (app/core/errors.py failure_response).
event.listen(Session, "after_commit", _committed)


class DatabaseUnreachable(ConnectionError):
    """A new PostgreSQL connection could not be opened: refused, timed out, or refused by the
    server (shutting down, starting up, not accepting connections, too many clients). Whatever
    the server said, the database is unavailable to this process for now (503)."""


async def _connect_asyncpg(dsn: str, **kwargs: Any) -> Any:
    import asyncpg

    try:
        return await asyncpg.connect(dsn, **kwargs)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DatabaseUnreachable(f"cannot connect to the database: {type(exc).__name__}") from exc


class UnstorableText(ValueError):
    """A statement's parameter holds a NUL character. The request's parsers refuse them first
    (app/core/schemas.py StrictModel, app/core/http.py NoNul, the form readers); this is the
    last line, so that no path (a header decoded into a lookup, a claim inside a JWT, a CLI
    argument) can make PostgreSQL refuse a statement and the caller see a 500. Answered 400."""


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        # A JSON column's serialised text: PostgreSQL's jsonb refuses \u0000 as well.
        return "\x00" in value or "\\u0000" in value
    if isinstance(value, (tuple, list)):
        return any(_holds_nul(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_nul(v) for v in value.values())
    return False


def _refuse_nul(_conn: Any, _cursor: Any, _statement: str, parameters: Any, _context: Any, _executemany: bool) -> None:
    if _holds_nul(parameters):
        raise UnstorableText("a text holds a NUL character")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the single writer; busy_timeout queues writers instead of
    # failing at once; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    # Let SQLAlchemy, not the driver, emit BEGIN (see _sqlite_begin_immediate).
    dbapi_connection.isolation_level = None


def _sqlite_begin_immediate(conn: Any) -> None:
    # A deferred transaction that reads and then writes fails at once with SQLITE_BUSY when
    # another connection wrote in between (WAL snapshot). Taking the write lock at BEGIN
    # makes concurrent writers queue on busy_timeout instead.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(
    settings: Settings, *, url: str | None = None, reader: bool = False, long_statements: bool = False
) -> AsyncEngine:
    """The engine; ``reader=True`` on SQLite gives a read-only one whose transactions do not
    take the write lock, for caches that reload while a request's transaction is open;
    ``long_statements`` lifts the statement timeout (the bulk importer's statements take minutes)."""
    url = url or settings.database_url
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)
        memory = not path or path == ":memory:"  # SQLAlchemy's own pool for one in-memory database
        pool: dict[str, Any] = {} if memory else {"poolclass": measured_pool("reader" if reader else "main")}
        engine = create_async_engine(url, connect_args={"timeout": 15}, **pool)
        event.listen(engine.sync_engine, "before_cursor_execute", _refuse_nul)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        if reader:
            event.listen(engine.sync_engine, "connect", _sqlite_query_only)
        else:
            event.listen(engine.sync_engine, "begin", _sqlite_begin_immediate)
        return engine
    # A fixed pool: connections opened past it ("overflow") are closed on return, so a busy
    # process kept forking and tearing down PostgreSQL backends (tests/core/test_db_pool.py).
    # asyncpg waits 60 s for a connection and forever for an answer by default: a partitioned
    # database would hold every request. Past these, the request answers 503.
    timeouts = {
        "timeout": CONNECT_TIMEOUT_SECONDS,
        "command_timeout": None if long_statements else COMMAND_TIMEOUT_SECONDS,
    }

    async def connect() -> Any:
        return await _connect_asyncpg(raw_dsn(url), **timeouts)

    # Measured: connections in use, checkouts that waited (app/core/metrics.py).
    engine = create_async_engine(
        url,
        poolclass=measured_pool("main"),
        pool_size=settings.database_pool_size,
        max_overflow=0,
        pool_timeout=settings.database_pool_timeout_seconds,
        pool_pre_ping=False,
        async_creator=connect,
    )
    event.listen(engine.sync_engine, "before_cursor_execute", _refuse_nul)
    return engine


def _sqlite_query_only(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session per request. Services own their transaction boundaries and commit
    explicitly; anything left uncommitted when the request ends is rolled back."""
    maker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with maker() as session:
        try:
            yield session
        finally:
            if session.in_transaction():
                await session.rollback()


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def raw_dsn(database_url: str) -> str:
    """The database of a ``postgresql+asyncpg://`` URL, as asyncpg takes it."""
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _no_reset(_connection: Any) -> None:
    """Nothing to reset: the raw pool runs single autocommit statements only."""


async def create_raw_pool(settings: Settings) -> Any:
    """The raw asyncpg pool of the hot paths (PostgreSQL): single autocommit statements, no reset
    query on release (~90 µs of CPU a statement instead of ~300 µs through an AsyncSession,
    bench/token.py), generic plans (RAW_SERVER_SETTINGS)."""
    import asyncpg

    return await asyncpg.create_pool(
        raw_dsn(settings.database_url),
        connect=_connect_asyncpg,
        timeout=CONNECT_TIMEOUT_SECONDS,
        command_timeout=COMMAND_TIMEOUT_SECONDS,
        min_size=1,
        max_size=settings.database_pool_size,
        reset=_no_reset,
        server_settings={**RAW_SERVER_SETTINGS, "application_name": "eid-hot-path"},
    )


async def raw_fetchrow(pool: Any, sql: str, *args: Any, timeout: float | None = None) -> Any:  # noqa: ASYNC109
    """One statement on a connection of a raw pool (create_raw_pool). A connection that a
    cancelled round trip left mid-operation is closed, not pooled again: the pool does no reset
    on release, and the next caller would get "another operation is in progress". (One that was
    lost, the pool closes itself.)"""
    import asyncpg

    async with pool.acquire() as conn:
        try:
            return await conn.fetchrow(sql, *args, timeout=timeout)
        except (asyncpg.InternalClientError, asyncio.CancelledError, TimeoutError):
            with contextlib.suppress(asyncpg.InterfaceError):
                conn.terminate()
            raise


# Set on a connection whose transaction revoked tokens, grants or accounts (note_revocation).
REVOKES = "eid_revokes"


async def note_revocation(session: AsyncSession) -> None:
    """Declare that this transaction revokes tokens, grants or accounts: when it commits, this
    process forgets what its caches knew of live tokens (app/oidc/livecheck.py). Other
    processes hear of it from the database (NOTIFY, migration 0008)."""
    connection = await session.connection()
    connection.sync_connection.info[REVOKES] = True  # type: ignore[union-attr]
