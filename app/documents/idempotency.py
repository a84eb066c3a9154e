"""Idempotent agency writes (draft-ietf-httpapi-idempotency-key-header).

A client sends ``Idempotency-Key`` with a write; the answer is stored under (client, key) in the
same transaction as the write itself, so either both exist or neither does, on any replica.
A retry with the same key and the same request gets the stored answer again (with
``Idempotent-Replayed: true``); the same key with a different request is refused (422). Two
concurrent requests with one key cannot both write: the second meets the first's primary key
(or the document's unique number) at commit, rolls back and replays the stored answer.

Refusals are not stored: they wrote nothing, and a retry is simply judged again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import Problem
from app.documents.errors import IdempotencyKeyInvalid, IdempotencyKeyMissing, IdempotencyKeyReused
from app.documents.models import IdempotencyRecord

KEY_TTL = dt.timedelta(hours=24)
MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class IdempotentRequest:
    client_id: str
    key: str | None
    fingerprint: str


def parse_key(header: str | None, *, required: bool) -> str | None:
    """The header is a Structured Field string (draft §2.1: ``"8e03978e-..."``); the bare
    token form many clients send is accepted too."""
    if header is None or header == "":
        if required:
            raise IdempotencyKeyMissing("Send Idempotency-Key: a unique value per write, reused only to retry it.")
        return None
    value = header.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if not value or len(value) > MAX_KEY_LENGTH or not all(0x21 <= ord(ch) <= 0x7E and ch not in '"\\' for ch in value):
        raise IdempotencyKeyInvalid(f"Use 1 to {MAX_KEY_LENGTH} visible ASCII characters, e.g. a UUID.")
    return value


def fingerprint(operation: str, body: dict[str, Any]) -> str:
    """Of the parsed request, so that the same JSON with other spacing or key order matches."""
    return hashlib.sha256(orjson.dumps({"op": operation, "body": body}, option=orjson.OPT_SORT_KEYS)).hexdigest()


async def _stored(session: AsyncSession, request: IdempotentRequest, now: dt.datetime) -> Answer | None:
    if request.key is None:
        return None
    record = await session.get(IdempotencyRecord, (request.client_id, request.key), populate_existing=True)
    if record is None:
        return None
    if record.expires_at <= now:
        await session.delete(record)  # an old key may be used again; deleted with this write
        return None
    if record.fingerprint != request.fingerprint:
        raise IdempotencyKeyReused("Use a new key for a new request; reuse a key only to retry the same request.")
    return Answer(record.status_code, record.response, replayed=True)


async def replay(session: AsyncSession, request: IdempotentRequest, now: dt.datetime) -> Answer | None:
    """Before doing the work: the stored answer to this request, if it was already done."""
    return await _stored(session, request, now)


async def commit(
    session: AsyncSession,
    request: IdempotentRequest,
    answer: Answer,
    now: dt.datetime,
    *,
    on_conflict: Callable[[], Problem],
) -> Answer:
    """Store the answer beside the write and commit both. A conflict at commit is either the
    same request done meanwhile by another replica (replayed) or a real conflict (raised)."""
    if request.key is not None:
        session.add(
            IdempotencyRecord(
                client_id=request.client_id, key=request.key, fingerprint=request.fingerprint,
                status_code=answer.status, response=answer.body, created_at=now, expires_at=now + KEY_TTL,
            )
        )  # fmt: skip
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        stored = await _stored(session, request, now)
        if stored is not None:
            return stored
        raise on_conflict() from None
    return answer
