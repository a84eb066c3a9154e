"""Consent records and the citizen's access log.

Every disclosure of a citizen's personal data writes an access-log row in the same
transaction as the disclosure's own audit row; withdrawing a consent stops future disclosures
and revokes the client's grants (and with them its refresh and access tokens) for that citizen.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.consent.models import AccessLogEntry, Consent, ConsentKind, LegalBasis
from app.core import audit
from app.core.audit import Actor
from app.core.context import request_id_var
from app.core.errors import NotFound
from app.core.journal import AccessRow, AuditRow
from app.oidc.models import Grant


class ConsentNotFound(NotFound):
    slug, title = "consent-not-found", "No such consent"


def record_disclosure(
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
    session.add(
        AccessLogEntry(
            id_number=id_number, at=now, recipient_type=recipient_type, recipient_id=recipient_id,
            recipient_name=recipient_name, channel=channel, categories=sorted(set(categories)),
            legal_basis=legal_basis.value, consent_id=consent_id, request_id=request_id_var.get(),
        )
    )  # fmt: skip


def add_call_rows(session: AsyncSession, audit_row: AuditRow, access_row: AccessRow | None) -> None:
    """A read-only call's audit row and (when something was disclosed) access-log row, added to
    the caller's transaction: the ORM path, where the group-commit journal is not used
    (SQLite; app/core/journal.py on PostgreSQL writes the same rows)."""
    audit.record(
        session, actor=Actor(audit_row.actor_type, audit_row.actor_id), action=audit_row.action,
        outcome=audit_row.outcome, now=audit_row.at, target_id_number=audit_row.target_id_number,
        detail=audit_row.detail,
    )  # fmt: skip
    if access_row is not None:
        record_disclosure(
            session, id_number=access_row.id_number, recipient_type=access_row.recipient_type,
            recipient_id=access_row.recipient_id, recipient_name=access_row.recipient_name,
            channel=access_row.channel, categories=access_row.categories,
            legal_basis=LegalBasis(access_row.legal_basis), consent_id=access_row.consent_id, now=access_row.at,
        )  # fmt: skip


async def access_log(
    session: AsyncSession, id_number: str, *, before_id: int | None, limit: int
) -> list[AccessLogEntry]:
    stmt = (
        select(AccessLogEntry)
        .where(AccessLogEntry.id_number == id_number)
        .order_by(AccessLogEntry.id.desc())
        .limit(limit)
    )
    if before_id is not None:
        stmt = stmt.where(AccessLogEntry.id < before_id)
    return list((await session.scalars(stmt)).all())


async def active_consents(session: AsyncSession, account_id: uuid.UUID) -> list[Consent]:
    stmt = (
        select(Consent)
        .where(Consent.account_id == account_id, Consent.revoked_at.is_(None))
        .order_by(Consent.granted_at.desc())
    )
    return list((await session.scalars(stmt)).all())


async def revoke_consent(
    session: AsyncSession,
    consent_id: uuid.UUID,
    *,
    account_id: uuid.UUID,
    id_number: str,
    actor: Actor,
    now: dt.datetime,
) -> Consent:
    consent = await session.get(Consent, consent_id)
    if consent is None or consent.account_id != account_id or consent.revoked_at is not None:
        raise ConsentNotFound()
    consent.revoked_at = now
    # An OIDC consent is what the client's grants (and tokens) rest on; e-KYC and share consents
    # have no grants, and withdrawing one must not end the citizen's portal sessions.
    if consent.kind == ConsentKind.oidc and consent.client_id is not None:
        await session.execute(
            update(Grant)
            .where(Grant.account_id == account_id, Grant.client_id == consent.client_id, Grant.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason="consent_withdrawn")
        )
    audit.record(
        session,
        actor=actor,
        action="consent.revoke",
        outcome="ok",
        now=now,
        target_id_number=id_number,
        detail={"client": consent.client_id, "kind": consent.kind, "scope": consent.scope},
    )
    await session.commit()
    return consent
