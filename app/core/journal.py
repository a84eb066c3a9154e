"""Durable audit and access-log rows for read-only hot paths, in group commits (PostgreSQL).

A bank's identity check or a portal's userinfo call changes nothing but must leave an audit
row and, when personal data was disclosed, an access-log row, durably, before it answers.
Committing those rows per call costs a WAL flush and ~300 µs of PostgreSQL CPU each time,
which caps the call rate. Here the rows of concurrent calls in one process are written
together (app/core/batching.py): each caller awaits the commit of the statement holding its
rows, so no call is answered before its rows are durable. A statement (JSON parameters
unpacked by ``json_to_recordset`` into both tables) is written whole or not at all; when the
database refuses one, its calls are written again one at a time, so that a refused row fails
its own call only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import asyncpg
import orjson
from sqlalchemy import Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.audit import AccessLogEntry, AccessRow, AuditEvent, AuditRow, access_values, add_call_rows, audit_values
from app.core.batching import Batcher, Coalescer
from app.core.context import request_id_var
from app.core.db import RAW_SERVER_SETTINGS, raw_fetchrow
from app.core.errors import ServiceUnavailable


def _insert_from_json(table: Table, param: str) -> str:
    """``INSERT INTO table (columns) SELECT columns FROM json_to_recordset(param)``, with every
    column of the model but its generated key, typed as PostgreSQL names them."""
    columns = [c for c in table.columns if not c.primary_key]
    names = ", ".join(c.name for c in columns)
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    typed = ", ".join(f"{c.name} {c.type.compile(dialect=dialect)}" for c in columns)
    # Constant text built from the models at import, never from input.
    return f"INSERT INTO {table.name} ({names}) SELECT {names} FROM json_to_recordset({param}::json) AS r({typed})"  # noqa: S608


# A batch travels as two JSON parameters (cheaper to encode than typed arrays, column by column),
# in two data-modifying CTEs that other statements can lead with (app/verify does: one round
# trip records one batch and reads the next). The columns are the models' (app/core/audit.py).
JOURNAL_CTES = (
    f"WITH audit AS ({_insert_from_json(AuditEvent.__table__, '$1')}),"  # type: ignore[arg-type]
    f" access AS ({_insert_from_json(AccessLogEntry.__table__, '$2')})"  # type: ignore[arg-type]
)
_SQL = JOURNAL_CTES + " SELECT 1"
log = logging.getLogger("eid.journal")

# A stalled statement (a lock, a stalled standby) fails its calls with 503 instead of holding
# every call in the process; seconds.
STATEMENT_TIMEOUT = 5.0


def unrecorded() -> ServiceUnavailable:
    """What a call whose rows could not be committed answers (503): no result."""
    return ServiceUnavailable("The call could not be recorded, so it was not answered.")


JournalRows = tuple[dict[str, Any], dict[str, Any] | None]


def journal_rows(audit: AuditRow, access: AccessRow | None, request_id: str | None) -> JournalRows:
    """The rows as written, with the request ID of the call they record (the ORM path builds
    the same ones, app/core/audit.py)."""
    return audit_values(audit, request_id), access_values(access, request_id) if access is not None else None


def journal_params(rows: list[JournalRows]) -> tuple[str, str]:
    """$1 and $2 of JOURNAL_CTES."""
    return (
        orjson.dumps([audit for audit, _ in rows], default=str).decode(),
        # default=str: UUIDs read through asyncpg are its own type, which orjson does not know.
        orjson.dumps([access for _, access in rows if access is not None], default=str).decode(),
    )


class Journal(Protocol):
    """Where read-only calls leave their rows: ``write`` returns once they are committed, or
    raises ServiceUnavailable (503: not recorded, so the call is not answered)."""

    async def write(self, audit: AuditRow, access: AccessRow | None = None) -> None: ...

    async def close(self) -> None: ...


class SessionJournal:
    """One short transaction per call (SQLite: one process, no raw pool)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def write(self, audit: AuditRow, access: AccessRow | None = None) -> None:
        async with self._sessionmaker() as session:
            add_call_rows(session, audit, access)
            try:
                await session.commit()
            except SQLAlchemyError:
                log.error("%s could not be recorded; not answered", audit.action)
                raise unrecorded() from None

    async def close(self) -> None:
        return None


class GroupCommitJournal:
    """Writes (audit row, optional access-log row) pairs in group commits over a raw asyncpg pool."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._batcher: Batcher[JournalRows, None] = Batcher("journal", self._write_batch, unrecorded)

    async def write(self, audit: AuditRow, access: AccessRow | None = None) -> None:
        """Returns once both rows are committed; raises ServiceUnavailable (503) if they could not be."""
        await self._batcher.submit(journal_rows(audit, access, request_id_var.get()))

    async def write_each(self, rows: list[JournalRows]) -> list[Exception | None]:
        """One statement per call, after the database refused them together: for each call,
        None once written, or the error its caller gets."""
        outcomes: list[Exception | None] = []
        for one in rows:
            try:
                await self._write([one])
                outcomes.append(None)
            except asyncpg.PostgresError:
                outcomes.append(unrecorded())
        return outcomes

    async def _write(self, rows: list[JournalRows]) -> None:
        await raw_fetchrow(self._pool, _SQL, *journal_params(rows), timeout=STATEMENT_TIMEOUT)

    async def _write_batch(self, batch: list[JournalRows]) -> list[Exception | None]:
        try:
            await self._write(batch)
            return [None] * len(batch)
        except asyncpg.PostgresError:  # refused, so nothing was written
            if len(batch) == 1:
                raise
        return await self.write_each(batch)

    async def close(self) -> None:
        await self._batcher.close()


C = TypeVar("C")  # a call
R = TypeVar("R")  # its outcome


@dataclass(frozen=True, slots=True)
class _Pending(Generic[C]):
    call: C
    request_id: str | None


Decide = Callable[[C, Any], tuple[R, AuditRow, AccessRow | None]]


class RecordedReads(Coalescer[_Pending[C], R]):
    """Read-only calls that each read records by key and must leave their journal rows before
    they are answered (PostgreSQL): two round trips per call, overlapped with the neighbouring
    batches. Each statement commits the rows of the batch before (JOURNAL_CTES) and reads the
    records of the batch after (``read_sql``, whose ``$3`` is the array of keys and whose first
    column is the key), so a busy process sends one statement per batch, not two. A call is
    answered only after the statement holding its rows has committed. When the database refuses
    a statement (nothing of it was written), its rows are written again one call at a time, so
    that a refused row fails its own call only, and its reads are retried; when the connection
    is lost or stalls, every call in the statement answers 503 (app/core/batching.py explains
    the batching itself).

    A domain gives the SQL of its read, the key of a call, and ``decide(call, record)`` with
    the call's outcome and rows (record: the row read for its key, or None)."""

    def __init__(
        self,
        name: str,
        dsn: str,
        journal: GroupCommitJournal,
        *,
        read_sql: str,
        key: Callable[[C], Any],
        decide: Decide[C, R],
        max_batch: int = 500,
    ) -> None:
        super().__init__(unrecorded, max_batch)
        self._name = name
        # Its own connection: one statement is in flight at a time, and a pool's acquire and
        # release would cost more CPU than the statement itself (bench/token.py).
        self._dsn = dsn
        self._conn: Any = None
        self._journal = journal  # for writing rows one call at a time after a refusal
        self._sql = JOURNAL_CTES + " " + read_sql
        self._key = key
        self._decide = decide

    async def read(self, call: C) -> R:
        return await self.submit(_Pending(call, request_id_var.get()))

    async def _drain(self) -> None:
        # Calls decided in the previous round trip, whose rows the next one commits.
        decided: list[tuple[JournalRows, asyncio.Future[R], R]] = []
        batch: list[tuple[_Pending[C], asyncio.Future[R]]] = []
        try:
            while self._pending or decided:
                batch = self._take()
                audits, accesses = journal_params([rows for rows, _, _ in decided])
                wanted = list({self._key(pending.call) for pending, _ in batch})
                try:
                    found = await self._statement(audits, accesses, wanted)
                except asyncpg.PostgresConnectionError as exc:  # lost: nothing is known
                    self._lost(exc, [done for _, done, _ in decided] + [done for _, done in batch])
                    decided, batch = [], []
                    continue
                except asyncpg.PostgresError as exc:
                    # Refused, so nothing of it was written. One refused row must not fail the
                    # other calls: write the rows one call at a time, and read this batch again.
                    log.error("%s: a statement was refused: %s", self._name, type(exc).__name__)
                    if not decided:  # the reads alone were refused
                        self._fail([done for _, done in batch])
                    else:
                        self._pending[0:0] = batch
                        batch = []
                        await self._write_each(decided)
                    decided, batch = [], []
                    continue
                except Exception as exc:  # the connection is lost or stalled: nothing is known
                    self._lost(exc, [done for _, done, _ in decided] + [done for _, done in batch])
                    decided, batch = [], []
                    continue
                for _, done, outcome in decided:
                    if not done.done():
                        done.set_result(outcome)
                records = {row[0]: row for row in found}
                decided = []
                for pending, done in batch:
                    outcome, audit, access = self._decide(pending.call, records.get(self._key(pending.call)))
                    decided.append((journal_rows(audit, access, pending.request_id), done, outcome))
                batch = []
        finally:
            self._fail([done for _, done, _ in decided] + [done for _, done in batch])

    async def _statement(self, audits: str, accesses: str, wanted: list[Any]) -> list[Any]:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self._dsn, timeout=5,
                server_settings={**RAW_SERVER_SETTINGS, "application_name": f"eid-{self._name.replace(' ', '-')}"},
            )  # fmt: skip
        found: list[Any] = await self._conn.fetch(self._sql, audits, accesses, wanted, timeout=STATEMENT_TIMEOUT)
        return found

    async def _write_each(self, decided: list[tuple[JournalRows, asyncio.Future[R], R]]) -> None:
        try:
            outcomes = await self._journal.write_each([rows for rows, _, _ in decided])
        except Exception as exc:  # the database is unreachable: nothing is known
            log.error("%s: a round trip failed: %s", self._name, type(exc).__name__)
            self._fail([done for _, done, _ in decided])
            return
        for (_, done, outcome), error in zip(decided, outcomes, strict=True):
            if done.done():
                continue
            if error is None:
                done.set_result(outcome)
            else:
                self._fail([done])

    def _lost(self, exc: Exception, waiting: list[asyncio.Future[R]]) -> None:
        log.error("%s: a round trip failed: %s", self._name, type(exc).__name__)
        self._drop_connection()
        self._fail(waiting)

    def _drop_connection(self) -> None:
        """After a lost or stalled round trip, start again on a new connection (the next batch)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def close(self) -> None:
        """Let the calls in flight finish, then close the connection."""
        await super().close()
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
