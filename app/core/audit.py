"""The journal's two tables and the one definition of their rows.

- ``audit_events``: append-only audit trail: who did what to whom, when, with what outcome.
  Targets are stored masked; database triggers refuse UPDATE and DELETE (see the migration).
- ``access_log``: every disclosure of a citizen's personal data (who received which categories,
  when, under which consent or legal basis); the citizen reads their own at GET /me/access-log.

A row is written in the same transaction as the change it records (``record`` and ``disclose``,
the ORM path), or, for read-only hot paths on PostgreSQL, in a group commit
(app/core/journal.py). Both paths build their rows with ``audit_values`` and ``access_values``
and the group commit's SQL is derived from these models' columns, so the two cannot drift.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from app.core.context import request_id_var
from app.core.db import Base, UTCDateTime
from app.core.privacy import mask_id_number


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    actor_type: Mapped[str] = mapped_column(String(16))  # citizen | officer | admin | client | system | anonymous
    actor_id: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(32))
    request_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (
        Index("ix_audit_events_at", "at"),
        Index("ix_audit_events_target", "target"),
        Index("ix_audit_events_action", "action"),
    )


class LegalBasis(StrEnum):
    consent = "consent"
    law = "law"  # an officer's duty, a verification the law allows


class AccessLogEntry(Base):
    """One disclosure of a citizen's personal data."""

    __tablename__ = "access_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    id_number: Mapped[str] = mapped_column(String(12))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    recipient_type: Mapped[str] = mapped_column(String(16))  # client | officer | verifier
    recipient_id: Mapped[str | None] = mapped_column(String(64))
    recipient_name: Mapped[str | None] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(32))  # userinfo | ekyc | verify | qr | registry
    categories: Mapped[list[str]] = mapped_column(JSON)
    legal_basis: Mapped[str] = mapped_column(String(16))
    consent_id: Mapped[uuid.UUID | None] = mapped_column()
    request_id: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("ix_access_log_id_number_id", "id_number", "id"),)


@dataclass(frozen=True, slots=True)
class Actor:
    type: str
    id: str | None = None

    @property
    def label(self) -> str:
        return f"{self.type}:{self.id}" if self.id else self.type


ANONYMOUS = Actor("anonymous")
SYSTEM = Actor("system")


@dataclass(frozen=True, slots=True)
class AuditRow:
    """An audit row before it is written (either path)."""

    at: dt.datetime
    actor_type: str
    actor_id: str | None
    action: str
    target_id_number: str | None
    outcome: str
    detail: dict[str, Any] | None
    target: str | None = None  # a target that is not an ID number (a client, a challenge)


@dataclass(frozen=True, slots=True)
class AccessRow:
    """An access-log row before it is written (either path)."""

    id_number: str
    at: dt.datetime
    recipient_type: str
    recipient_id: str | None
    recipient_name: str | None
    channel: str
    categories: Iterable[str]
    legal_basis: str
    consent_id: uuid.UUID | None


def audit_values(row: AuditRow, request_id: str | None) -> dict[str, Any]:
    """The ``audit_events`` columns of a row (the ID number masked)."""
    return {
        "at": row.at, "actor_type": row.actor_type, "actor_id": row.actor_id, "action": row.action,
        "target": mask_id_number(row.target_id_number) if row.target_id_number else row.target,
        "outcome": row.outcome, "request_id": request_id, "detail": row.detail,
    }  # fmt: skip


def access_values(row: AccessRow, request_id: str | None) -> dict[str, Any]:
    """The ``access_log`` columns of a row."""
    return {
        "id_number": row.id_number, "at": row.at, "recipient_type": row.recipient_type,
        "recipient_id": row.recipient_id, "recipient_name": row.recipient_name, "channel": row.channel,
        "categories": sorted(set(row.categories)), "legal_basis": row.legal_basis, "consent_id": row.consent_id,
        "request_id": request_id,
    }  # fmt: skip


def record(
    session: AsyncSession,
    *,
    actor: Actor,
    action: str,
    outcome: str,
    now: dt.datetime,
    target_id_number: str | None = None,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an audit row to the session's current transaction (the caller commits)."""
    row = AuditRow(now, actor.type, actor.id, action, target_id_number, outcome, detail, target)
    event = AuditEvent(**audit_values(row, request_id_var.get()))
    session.add(event)
    return event


def disclose(
    session: AsyncSession,
    *,
    id_number: str,
    recipient_type: str,
    recipient_id: str | None,
    recipient_name: str | None,
    channel: str,
    categories: Iterable[str],
    legal_basis: LegalBasis,
    consent_id: uuid.UUID | None,
    now: dt.datetime,
) -> None:
    """Add an access-log row to the caller's transaction."""
    row = AccessRow(
        id_number, now, recipient_type, recipient_id, recipient_name, channel, categories, legal_basis.value,
        consent_id,
    )  # fmt: skip
    session.add(AccessLogEntry(**access_values(row, request_id_var.get())))


def add_call_rows(session: AsyncSession, audit_row: AuditRow, access_row: AccessRow | None) -> None:
    """A read-only call's rows, added to the caller's transaction: the ORM path of what
    app/core/journal.py writes in group commits on PostgreSQL."""
    request_id = request_id_var.get()
    session.add(AuditEvent(**audit_values(audit_row, request_id)))
    if access_row is not None:
        session.add(AccessLogEntry(**access_values(access_row, request_id)))
