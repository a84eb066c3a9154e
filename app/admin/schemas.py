from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import Field

from app.core.schemas import Password, ResponseModel, StrictModel


class StaffLogin(StrictModel):
    username: str = Field(min_length=1, max_length=64)
    password: Password


class StaffToken(ResponseModel):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int
    scope: str


class AuditEventOut(ResponseModel):
    id: int
    at: dt.datetime
    actor_type: str
    actor_id: str | None
    action: str
    target: str | None
    outcome: str
    request_id: str | None
    detail: dict[str, Any] | None


class AuditPage(ResponseModel):
    items: list[AuditEventOut]
    next_before_id: int | None
