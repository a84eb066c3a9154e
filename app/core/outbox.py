"""Delivery of outbox rows (queued SMS, back-channel logout tokens) with no transaction held
across the network.

A pass claims the due rows in one short transaction (FOR UPDATE SKIP LOCKED, so several
workers on PostgreSQL never take the same row), counting the attempt and leasing the row until
its next retry time, so that a worker that dies mid-send leaves it to be tried again then.
It sends them with no transaction open, and records each outcome in a second short
transaction. A slow or unreachable receiver (each call has its timeout) therefore never holds
database locks: on SQLite it would otherwise keep every other writer waiting.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

P = TypeVar("P")


async def deliver_due(
    sessionmaker: async_sessionmaker[AsyncSession],
    model: Any,
    *,
    now: dt.datetime,
    max_attempts: int,
    backoff: Callable[[int], dt.timedelta],
    prepare: Callable[[Any], P],
    send: Callable[[P], Awaitable[None]],
    record: Callable[[Any, Exception | None], None],
    batch: int = 50,
) -> int:
    """One pass over the due rows of ``model`` (columns id, status, attempts, next_attempt_at):
    ``prepare(row)`` (in the claiming transaction) gives what ``send`` needs; ``send`` raises
    when the delivery failed; ``record(row, error)`` adds what a domain keeps of the outcome,
    after the status is set (sent, or failed for good after ``max_attempts``). Returns how
    many were sent."""
    async with sessionmaker() as session, session.begin():
        rows = (
            await session.scalars(
                select(model)
                .where(model.status == "queued", model.next_attempt_at <= now)
                .order_by(model.next_attempt_at)
                .limit(batch)
                .with_for_update(skip_locked=True)
            )
        ).all()
        claimed = []
        for row in rows:
            row.attempts += 1
            row.next_attempt_at = now + backoff(row.attempts)  # the lease, and the next retry
            claimed.append((row.id, prepare(row)))
    if not claimed:
        return 0
    outcomes: list[tuple[Any, Exception | None]] = []
    for row_id, payload in claimed:
        try:
            await send(payload)
            outcomes.append((row_id, None))
        except Exception as exc:  # the receiver's failure, recorded on the row
            outcomes.append((row_id, exc))
    async with sessionmaker() as session, session.begin():
        for row_id, error in outcomes:
            row = await session.get(model, row_id, with_for_update=True)
            if row is None:
                continue
            if error is None:
                row.status = "sent"
            elif row.attempts >= max_attempts:
                row.status = "failed"
            record(row, error)
    return sum(1 for _, error in outcomes if error is None)
