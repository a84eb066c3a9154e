from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from app.core.db import SessionDep
from app.core.deps import CtxDep
from app.core.http import json_body_only
from app.core.schemas import IdNumber
from app.registry import service
from app.registry.auth import RegistryAdmin, RegistryReader
from app.registry.schemas import CitizenIn, CitizenOut

router = APIRouter(prefix="/registry", tags=["registry"], dependencies=[json_body_only])

IdNumberPath = Annotated[IdNumber, Path(description="The 12-digit personal ID number")]


@router.put("/citizens", response_model=CitizenOut, summary="Create or correct a registry record")
async def put_citizen(
    body: CitizenIn, staff: RegistryAdmin, session: SessionDep, ctx: CtxDep, response: Response
) -> CitizenOut:
    written, created = await service.upsert_citizen(session, body, actor=staff.actor, now=ctx.clock.now())
    response.status_code = 201 if created else 200
    return written


@router.get("/citizens/{id_number}", response_model=CitizenOut, summary="Read a registry record")
async def get_citizen(id_number: IdNumberPath, staff: RegistryReader, session: SessionDep, ctx: CtxDep) -> CitizenOut:
    return await service.read_citizen(session, id_number, actor=staff.actor, now=ctx.clock.now())
