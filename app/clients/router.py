"""Relying-party onboarding: an administrator registers, approves or suspends a client."""

from __future__ import annotations

from fastapi import APIRouter

from app.clients import service as client_registry
from app.clients.auth import AdminClients
from app.clients.schemas import ClientCreated, ClientIn, ClientOut, ClientStatusIn
from app.clients.service import ClientCache
from app.core.db import SessionDep
from app.core.deps import CtxDep
from app.core.http import json_body_only

router = APIRouter(tags=["staff"], dependencies=[json_body_only])


@router.post("/admin/clients", status_code=201, response_model=ClientCreated, summary="Register a relying party")
async def create_client(body: ClientIn, staff: AdminClients, session: SessionDep, ctx: CtxDep) -> ClientCreated:
    client, secret = await client_registry.create_client(
        session, ctx.keyring, actor=staff.actor, now=ctx.clock.now(), **body.model_dump()
    )
    return ClientCreated(**ClientOut.model_validate(client).model_dump(), client_secret=secret)


@router.get("/admin/clients", response_model=list[ClientOut], summary="List relying parties")
async def list_clients(staff: AdminClients, session: SessionDep) -> list[ClientOut]:
    return [ClientOut.model_validate(c) for c in await client_registry.list_clients(session)]


@router.post(
    "/admin/clients/{client_id}/status", response_model=ClientOut, summary="Approve or suspend a relying party"
)
async def set_client_status(
    client_id: str, body: ClientStatusIn, staff: AdminClients, session: SessionDep, ctx: CtxDep
) -> ClientOut:
    client = await client_registry.set_status(session, client_id, body.status, actor=staff.actor, now=ctx.clock.now())
    cache = ctx.extension(ClientCache)
    if cache is not None:  # this process forgets at once; the others within EID_CACHE_TTL_SECONDS
        cache.forget(client_id)
    return ClientOut.model_validate(client)
