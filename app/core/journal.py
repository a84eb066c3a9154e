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

from typing import Any

import asyncpg
import orjson
from sqlalchemy import Table
from sqlalchemy.dialects import postgresql

from app.core.audit import AccessLogEntry, AccessRow, AuditEvent, AuditRow, access_values, audit_values
from app.core.batching import Batcher
from app.core.context import request_id_var
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


class Journal:
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
        await self._pool.execute(_SQL, *journal_params(rows), timeout=STATEMENT_TIMEOUT)

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
