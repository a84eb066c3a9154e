from __future__ import annotations

import datetime as dt
import uuid

from fastapi import APIRouter, Request, Response

from app.accounts.auth import CurrentCitizen
from app.clients.models import Client
from app.core.db import SessionDep
from app.core.deps import CtxDep
from app.core.hotpath import hot
from app.core.http import json_body, json_body_only
from app.oidc.endpoints import json_response
from app.oidc.provider import ProviderDep, get_provider
from app.verify import service
from app.verify.auth import EkycCaller, VerifyCaller, verify_callers
from app.verify.models import EkycRequest
from app.verify.schemas import (
    CitizenEkycRequestOut,
    DocumentQuery,
    DocumentResult,
    EkycRequestIn,
    EkycRequestOut,
    EkycResult,
    IdentityQuery,
    IdentityResult,
)

router = APIRouter(prefix="/verify", tags=["verify"], dependencies=[json_body_only])
me = APIRouter(prefix="/me", tags=["me"], dependencies=[json_body_only])


def _out(req: EkycRequest, now: dt.datetime) -> EkycRequestOut:
    status = service.effective_status(req, now)
    return EkycRequestOut(id=req.id, status=status, claims=req.claims, purpose=req.purpose, expires_at=req.expires_at)


@router.post(
    "/identity",
    response_model=IdentityResult,
    summary="Does this data match the registry? (yes/no per attribute, no data returned)",
    responses={422: {"description": "Invalid input"}},
)
@hot(body=IdentityQuery)
async def verify_identity(request: Request) -> Response:
    # A bank's hot path (app/core/hotpath.py): FastAPI's machinery costs more than the check
    # itself (bench/token.py), so the endpoint takes the raw Request and parses its body.
    provider = get_provider(request)
    caller = await verify_callers(request)
    query = await json_body(request, IdentityQuery)
    result = await service.verify_identity(provider.ctx, caller.entity, query, provider.ctx.clock.now())
    return json_response(result.model_dump())


@router.post(
    "/documents",
    response_model=DocumentResult,
    summary="Is this document valid now? (valid, expired, suspended, revoked, unknown)",
)
async def verify_document(
    body: DocumentQuery, caller: VerifyCaller, session: SessionDep, ctx: CtxDep
) -> DocumentResult:
    return await service.verify_document(session, caller.entity, body, ctx.clock.now(), ctx.clock.today())


@router.post(
    "/ekyc-requests",
    status_code=201,
    response_model=EkycRequestOut,
    summary="Ask a citizen to share verified data (e-KYC)",
)
async def start_ekyc(body: EkycRequestIn, caller: EkycCaller, session: SessionDep, ctx: CtxDep) -> EkycRequestOut:
    now = ctx.clock.now()
    return _out(await service.start_ekyc(session, ctx, caller.entity, body), now)


@router.get("/ekyc-requests/{request_id}", response_model=EkycRequestOut, summary="Poll an e-KYC request")
async def poll_ekyc(request_id: uuid.UUID, caller: EkycCaller, session: SessionDep, ctx: CtxDep) -> EkycRequestOut:
    return _out(await service.get_own_request(session, caller.entity, request_id), ctx.clock.now())


@router.get(
    "/ekyc-requests/{request_id}/result", response_model=EkycResult, summary="The signed e-KYC result, once approved"
)
async def ekyc_result(
    request_id: uuid.UUID, caller: EkycCaller, session: SessionDep, ctx: CtxDep, provider: ProviderDep
) -> EkycResult:
    token = await service.ekyc_result(provider, session, caller.entity, request_id, ctx.clock.now())
    return EkycResult(request_id=request_id, result=token)


@me.get(
    "/ekyc-requests",
    response_model=list[CitizenEkycRequestOut],
    summary="e-KYC requests waiting for the citizen's answer",
)
async def my_ekyc_requests(citizen: CurrentCitizen, session: SessionDep, ctx: CtxDep) -> list[CitizenEkycRequestOut]:
    from sqlalchemy import select

    reqs = await service.pending_for_citizen(session, citizen.entity, ctx.clock.now())
    ids = {r.client_id for r in reqs}
    names = (
        dict((await session.execute(select(Client.client_id, Client.name).where(Client.client_id.in_(ids)))).all())
        if ids
        else {}
    )
    return [
        CitizenEkycRequestOut(
            id=r.id,
            client_id=r.client_id,
            client_name=names.get(r.client_id, r.client_id),
            claims=r.claims,
            purpose=r.purpose,
            binding_message=r.binding_message,
            expires_at=r.expires_at,
        )
        for r in reqs
    ]


@me.post("/ekyc-requests/{request_id}/approve", status_code=204, summary="Approve an e-KYC request")
async def approve_ekyc(request_id: uuid.UUID, citizen: CurrentCitizen, session: SessionDep, ctx: CtxDep) -> Response:
    await service.decide(session, citizen.entity, request_id, True, ctx.clock.now())
    return Response(status_code=204)


@me.post("/ekyc-requests/{request_id}/deny", status_code=204, summary="Deny an e-KYC request")
async def deny_ekyc(request_id: uuid.UUID, citizen: CurrentCitizen, session: SessionDep, ctx: CtxDep) -> Response:
    await service.decide(session, citizen.entity, request_id, False, ctx.clock.now())
    return Response(status_code=204)
