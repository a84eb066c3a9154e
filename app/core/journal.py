"""Durable audit and access-log rows for read-only hot paths, in group commits (PostgreSQL).

A bank's identity check changes nothing but must leave an audit row and, when the person
exists, an access-log row, durably, before it answers. Committing those rows per call costs a
WAL flush and ~300 µs of PostgreSQL CPU each time, which caps the call rate. Here the rows of
concurrent calls in one process are written together (app/core/batching.py): each caller
awaits the commit of the batch holding its rows, so no call is answered before its rows are
durable, and if the write fails every call in the batch answers an error, not a result. A
batch is one autocommit statement (``unnest`` arrays into both tables): whole or not at all.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any

from app.core.batching import Batcher
from app.core.context import request_id_var
from app.core.errors import ServiceUnavailable
from app.core.privacy import mask_id_number

_SQL = (
    "WITH audit AS (INSERT INTO audit_events"
    " (at, actor_type, actor_id, action, target, outcome, request_id, detail)"
    " SELECT * FROM unnest($1::timestamptz[], $2::varchar[], $3::varchar[], $4::varchar[], $5::varchar[],"
    " $6::varchar[], $7::varchar[], $8::json[]))"
    " INSERT INTO access_log (id_number, at, recipient_type, recipient_id, recipient_name, channel, categories,"
    " legal_basis, consent_id, request_id)"
    " SELECT * FROM unnest($9::varchar[], $10::timestamptz[], $11::varchar[], $12::varchar[], $13::varchar[],"
    " $14::varchar[], $15::json[], $16::varchar[], $17::uuid[], $18::varchar[])"
)


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


def _unrecorded() -> ServiceUnavailable:
    return ServiceUnavailable("The call could not be recorded, so it was not answered.")


_Row = tuple[tuple[Any, ...], tuple[Any, ...] | None]


class Journal:
    """Writes (audit row, optional access-log row) pairs in group commits over a raw asyncpg pool."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._batcher: Batcher[_Row, None] = Batcher("journal", self._write_batch, _unrecorded)

    async def write(self, audit: AuditRow, access: AccessRow | None = None) -> None:
        """Returns once both rows are committed; raises ServiceUnavailable (503) if they could not be."""
        request_id = request_id_var.get()
        audit_values = (
            audit.at, audit.actor_type, audit.actor_id, audit.action,
            mask_id_number(audit.target_id_number) if audit.target_id_number else None,
            audit.outcome, request_id, json.dumps(audit.detail) if audit.detail is not None else None,
        )  # fmt: skip
        access_values = (
            None
            if access is None
            else (
                access.id_number, access.at, access.recipient_type, access.recipient_id, access.recipient_name,
                access.channel, json.dumps(sorted(set(access.categories))), access.legal_basis, access.consent_id,
                request_id,
            )
        )  # fmt: skip
        await self._batcher.submit((audit_values, access_values))

    async def _write_batch(self, batch: list[_Row]) -> list[None]:
        audits = [audit for audit, _ in batch]
        accesses = [access for _, access in batch if access is not None]
        columns = [list(col) for col in zip(*audits, strict=True)]
        columns += [list(col) for col in zip(*accesses, strict=True)] if accesses else [[] for _ in range(10)]
        await self._pool.execute(_SQL, *columns)
        return [None] * len(batch)

    async def close(self) -> None:
        await self._batcher.close()
