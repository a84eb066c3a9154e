"""Routes that exist only in demo mode: read the SMS outbox, move the clock. A test proves
they are absent from a normal app."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import Field, model_validator

from app.core.db import SessionDep
from app.core.deps import CtxDep
from app.core.schemas import StrictModel, normalise_phone
from app.core.sms import read_outbox

router = APIRouter(prefix="/_demo", tags=["demo"])


class ClockIn(StrictModel):
    advance_seconds: Annotated[int, Field(ge=0, le=10 * 365 * 86400)] | None = None
    reset: bool = False

    @model_validator(mode="after")
    def _one(self) -> ClockIn:
        if (self.advance_seconds is None) == (not self.reset):
            raise ValueError("send either advance_seconds or reset: true")
        return self


class ClockOut(StrictModel):
    now: dt.datetime
    offset_seconds: float


@router.get("/outbox", summary="SMS messages sent (demo mode only)")
async def outbox(
    session: SessionDep,
    ctx: CtxDep,
    phone: Annotated[str | None, Query(max_length=20)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> list[dict[str, str]]:
    return await read_outbox(session, ctx.keyring, phone=normalise_phone(phone) if phone else None, limit=limit)


@router.get("/clock", response_model=ClockOut, summary="The demo clock")
async def get_clock(ctx: CtxDep) -> ClockOut:
    return ClockOut(now=ctx.clock.now(), offset_seconds=ctx.clock.offset.total_seconds())


@router.post("/clock", response_model=ClockOut, summary="Move the demo clock forward (or back to real time)")
async def move_clock(body: ClockIn, ctx: CtxDep) -> ClockOut:
    if body.reset:
        ctx.clock.offset = dt.timedelta(0)
    else:
        ctx.clock.advance(dt.timedelta(seconds=body.advance_seconds or 0))
    return ClockOut(now=ctx.clock.now(), offset_seconds=ctx.clock.offset.total_seconds())
