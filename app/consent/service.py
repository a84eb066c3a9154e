"""Consent records and the citizen's access log.

Every disclosure of a citizen's personal data writes an access-log row in the same
transaction as the disclosure's own audit row; withdrawing a consent stops future disclosures
and revokes the client's grants (and with them its refresh and access tokens) for that citizen.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.consent.models import Consent
from app.core import audit
from app.core.audit import AccessLogEntry, Actor
from app.core.deps import Events
from app.core.errors import NotFound


@dataclass(frozen=True, slots=True)
class ConsentWithdrawn:
    """Event: the citizen withdrew a consent (app/oidc/logout.py revokes an OpenID consent's grants)."""

    consent_id: uuid.UUID
    account_id: uuid.UUID
    client_id: str | None
    kind: str
    now: dt.datetime


class ConsentNotFound(NotFound):
    slug, title = "consent-not-found", "No such consent"


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
    events: Events,
) -> Consent:
    consent = await session.get(Consent, consent_id)
    if consent is None or consent.account_id != account_id or consent.revoked_at is not None:
        raise ConsentNotFound()
    consent.revoked_at = now
    # An OIDC consent is what the client's grants (and tokens) rest on: the provider, subscribed
    # to this event, revokes them in this transaction. e-KYC and share consents have no grants.
    await events.publish(session, ConsentWithdrawn(consent.id, account_id, consent.client_id, consent.kind, now))
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
