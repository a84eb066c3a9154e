"""A citizen's remembered consents: listed and revocable from their account. Revoking one stops
future disclosures to that client and revokes the client's grants (and so its tokens)."""

from __future__ import annotations

import datetime as dt
import uuid

from fastapi import APIRouter, Response
from sqlalchemy import select, update

from app.accounts.auth import CurrentCitizen
from app.core import audit
from app.core.audit import Actor
from app.core.db import SessionDep
from app.core.deps import CtxDep
from app.core.errors import NotFound
from app.core.schemas import ResponseModel
from app.oidc.models import Client, Consent, Grant

router = APIRouter(prefix="/me", tags=["me"])


class ConsentOut(ResponseModel):
    id: uuid.UUID
    client_id: str
    client_name: str
    scope: str
    granted_at: dt.datetime


class ConsentNotFound(NotFound):
    slug, title = "consent-not-found", "No such consent"


@router.get("/consents", response_model=list[ConsentOut], summary="The services the citizen consented to")
async def my_consents(citizen: CurrentCitizen, session: SessionDep) -> list[ConsentOut]:
    rows = await session.execute(
        select(Consent, Client.name)
        .join(Client, Client.client_id == Consent.client_id)
        .where(Consent.account_id == citizen.account.id, Consent.revoked_at.is_(None))
        .order_by(Consent.granted_at.desc())
    )
    return [
        ConsentOut(id=c.id, client_id=c.client_id, client_name=name, scope=c.scope, granted_at=c.granted_at)
        for c, name in rows.all()
    ]


@router.delete("/consents/{consent_id}", status_code=204, summary="Withdraw a consent")
async def revoke_consent(consent_id: uuid.UUID, citizen: CurrentCitizen, session: SessionDep, ctx: CtxDep) -> Response:
    now = ctx.clock.now()
    consent = await session.get(Consent, consent_id)
    if consent is None or consent.account_id != citizen.account.id or consent.revoked_at is not None:
        raise ConsentNotFound()
    consent.revoked_at = now
    await session.execute(
        update(Grant)
        .where(Grant.account_id == citizen.account.id, Grant.client_id == consent.client_id, Grant.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason="consent_withdrawn")
    )
    audit.record(
        session,
        actor=Actor("citizen", str(citizen.account.id)),
        action="consent.revoke",
        outcome="ok",
        now=now,
        target_id_number=citizen.account.id_number,
        detail={"client": consent.client_id, "scope": consent.scope},
    )
    await session.commit()
    return Response(status_code=204)
