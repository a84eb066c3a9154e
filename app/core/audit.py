"""Append-only audit trail: who did what to whom, when, and with what outcome.

Rows are written in the same transaction as the change they record (so a change is never
without its audit row, nor the reverse). Failed attempts, which change nothing else, are
recorded in their own transaction. Targets are stored masked; database triggers refuse
UPDATE and DELETE (see the migration).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Actor:
    type: str
    id: str | None = None

    @property
    def label(self) -> str:
        return f"{self.type}:{self.id}" if self.id else self.type


ANONYMOUS = Actor("anonymous")
SYSTEM = Actor("system")


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
    event = AuditEvent(
        at=now,
        actor_type=actor.type,
        actor_id=actor.id,
        action=action,
        target=mask_id_number(target_id_number) if target_id_number else target,
        outcome=outcome,
        request_id=request_id_var.get(),
        detail=detail,
    )
    session.add(event)
    return event
