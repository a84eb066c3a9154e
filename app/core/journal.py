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

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from app.core.batching import Batcher
from app.core.context import request_id_var
from app.core.errors import ServiceUnavailable
from app.core.privacy import mask_id_number

# A batch travels as two JSON parameters (cheaper to encode than typed arrays, column by column),
# in two data-modifying CTEs that other statements can lead with (app/verify does: one round
# trip records one batch and reads the next).
JOURNAL_CTES = (
    "WITH audit AS (INSERT INTO audit_events (at, actor_type, actor_id, action, target, outcome, request_id, detail)"
    " SELECT at, actor_type, actor_id, action, target, outcome, request_id, detail FROM json_to_recordset($1::json)"
    " AS r(at timestamptz, actor_type varchar, actor_id varchar, action varchar, target varchar, outcome varchar,"
    " request_id varchar, detail json)),"
    " access AS (INSERT INTO access_log (id_number, at, recipient_type, recipient_id, recipient_name, channel,"
    " categories, legal_basis, consent_id, request_id)"
    " SELECT id_number, at, recipient_type, recipient_id, recipient_name, channel, categories, legal_basis,"
    " consent_id, request_id FROM json_to_recordset($2::json) AS r(id_number varchar, at timestamptz,"
    " recipient_type varchar, recipient_id varchar, recipient_name varchar, channel varchar, categories json,"
    " legal_basis varchar, consent_id uuid, request_id varchar))"
)
_SQL = JOURNAL_CTES + " SELECT 1"
# A stalled statement (a lock, a stalled standby) fails its calls with 503 instead of holding
# every call in the process; seconds.
STATEMENT_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class AuditRow:
    at: dt.datetime
    actor_type: str
    actor_id: str | None
    action: str
    target_id_number: str | None
    outcome: str
    detail: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class AccessRow:
    id_number: str
    at: dt.datetime
    recipient_type: str
    recipient_id: str | None
    recipient_name: str | None
    channel: str
    categories: list[str]
    legal_basis: str
    consent_id: uuid.UUID | None


def unrecorded() -> ServiceUnavailable:
    """What a call whose rows could not be committed answers (503): no result."""
    return ServiceUnavailable("The call could not be recorded, so it was not answered.")


JournalRows = tuple[dict[str, Any], dict[str, Any] | None]


def journal_rows(audit: AuditRow, access: AccessRow | None, request_id: str | None) -> JournalRows:
    """The rows as written, with the request ID of the call they record."""
    audit_row = {
        "at": audit.at, "actor_type": audit.actor_type, "actor_id": audit.actor_id, "action": audit.action,
        "target": mask_id_number(audit.target_id_number) if audit.target_id_number else None,
        "outcome": audit.outcome, "request_id": request_id, "detail": audit.detail,
    }  # fmt: skip
    if access is None:
        return audit_row, None
    return audit_row, {
        "id_number": access.id_number, "at": access.at, "recipient_type": access.recipient_type,
        "recipient_id": access.recipient_id, "recipient_name": access.recipient_name, "channel": access.channel,
        "categories": sorted(set(access.categories)), "legal_basis": access.legal_basis,
        "consent_id": str(access.consent_id) if access.consent_id else None, "request_id": request_id,
    }  # fmt: skip


def journal_params(rows: list[JournalRows]) -> tuple[str, str]:
    """$1 and $2 of JOURNAL_CTES."""
    return (
        orjson.dumps([audit for audit, _ in rows]).decode(),
        orjson.dumps([access for _, access in rows if access is not None]).decode(),
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
