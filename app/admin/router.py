from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.admin import service
from app.admin.auth import AuditReader
from app.admin.schemas import AuditEventOut, AuditPage, StaffLogin, StaffToken
from app.core.db import SessionDep
from app.core.deps import CtxDep
from app.core.http import json_body_only
from app.core.privacy import mask_id_number
from app.core.schemas import MAX_BIGINT, IdNumber

router = APIRouter(tags=["staff"], dependencies=[json_body_only])


@router.post("/staff/token", response_model=StaffToken, summary="Sign in as an officer or administrator")
async def staff_token(body: StaffLogin, session: SessionDep, ctx: CtxDep) -> StaffToken:
    token, row = await service.staff_login(session, ctx, username=body.username, password=body.password)
    return StaffToken(
        access_token=token,
        expires_in=int((row.expires_at - row.created_at).total_seconds()),
        scope=row.scopes,
    )


@router.get("/audit/events", response_model=AuditPage, summary="Read the audit trail, newest first")
async def audit_events(
    staff: AuditReader,
    session: SessionDep,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_BIGINT)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    id_number: Annotated[IdNumber | None, Query()] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
) -> AuditPage:
    target = mask_id_number(id_number) if id_number else None
    events = await service.read_audit(session, before_id=before_id, limit=limit, target=target, action=action)
    items = [AuditEventOut.model_validate(e) for e in events]
    return AuditPage(items=items, next_before_id=items[-1].id if len(items) == limit else None)
