from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy import select

from app.accounts.auth import CurrentCitizen
from app.clients.models import Client
from app.consent import service
from app.core.audit import Actor
from app.core.db import SessionDep
from app.core.deps import CtxDep
from app.core.schemas import MAX_BIGINT, ResponseModel

router = APIRouter(prefix="/me", tags=["me"])


class ConsentOut(ResponseModel):
    id: uuid.UUID
    kind: str
    client_id: str | None
    client_name: str | None
    scope: str
    claims: list[str]
    purpose: str | None
    granted_at: dt.datetime


class AccessLogOut(ResponseModel):
    id: int
    at: dt.datetime
    recipient_type: str
    recipient_id: str | None
    recipient_name: str | None
    channel: str
    categories: list[str]
    legal_basis: str
    consent_id: uuid.UUID | None


class AccessLogPage(ResponseModel):
    items: list[AccessLogOut]
    next_before_id: int | None


@router.get("/consents", response_model=list[ConsentOut], summary="What the citizen consented to, and to whom")
async def my_consents(citizen: CurrentCitizen, session: SessionDep) -> list[ConsentOut]:
    consents = await service.active_consents(session, citizen.entity.id)
    ids = {c.client_id for c in consents if c.client_id}
    names = (
        dict((await session.execute(select(Client.client_id, Client.name).where(Client.client_id.in_(ids)))).all())
        if ids
        else {}
    )
    return [
        ConsentOut(
            id=c.id,
            kind=c.kind,
            client_id=c.client_id,
            client_name=names.get(c.client_id) if c.client_id else None,
            scope=c.scope,
            claims=c.claims or [],
            purpose=c.purpose,
            granted_at=c.granted_at,
        )
        for c in consents
    ]


@router.delete("/consents/{consent_id}", status_code=204, summary="Withdraw a consent (revokes the client's tokens)")
async def revoke_consent(consent_id: uuid.UUID, citizen: CurrentCitizen, session: SessionDep, ctx: CtxDep) -> Response:
    account = citizen.entity
    await service.revoke_consent(
        session,
        consent_id,
        account_id=account.id,
        id_number=account.id_number,
        actor=Actor("citizen", str(account.id)),
        now=ctx.clock.now(),
        events=ctx.events,
    )
    return Response(status_code=204)


@router.get(
    "/access-log", response_model=AccessLogPage, summary="Who received the citizen's personal data, newest first"
)
async def my_access_log(
    citizen: CurrentCitizen,
    session: SessionDep,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_BIGINT)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> AccessLogPage:
    entries = await service.access_log(session, citizen.entity.id_number, before_id=before_id, limit=limit)
    items = [AccessLogOut.model_validate(e) for e in entries]
    return AccessLogPage(items=items, next_before_id=items[-1].id if len(items) == limit else None)
