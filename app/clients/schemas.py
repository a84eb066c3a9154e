from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import Field

from app.core.schemas import ResponseModel, StrictModel


class ClientIn(StrictModel):
    """A relying party to register (an administrator's decision, after qualification checks)."""

    name: str = Field(min_length=1, max_length=200)
    kind: Literal["portal", "bank", "agency", "admin"]
    redirect_uris: list[Annotated[str, Field(max_length=500)]] = Field(default=[], max_length=20)
    post_logout_redirect_uris: list[Annotated[str, Field(max_length=500)]] = Field(default=[], max_length=20)
    grant_types: list[Literal["authorization_code", "refresh_token", "client_credentials"]] = Field(
        min_length=1, max_length=3
    )
    scopes: list[Annotated[str, Field(max_length=40)]] = Field(min_length=1, max_length=30)
    auth_method: Literal["client_secret_basic", "client_secret_post", "private_key_jwt", "none"] = "client_secret_basic"
    id_token_alg: Literal["RS256", "ES256"] = "RS256"
    jwks: dict[str, Any] | None = None
    jwks_uri: Annotated[str, Field(max_length=500, pattern=r"^https://")] | None = None
    sector_identifier: Annotated[str, Field(max_length=255)] | None = None
    backchannel_logout_uri: Annotated[str, Field(max_length=500, pattern=r"^https?://")] | None = None
    can_introspect_any: bool = False
    approved: bool = False


class ClientOut(ResponseModel):
    client_id: str
    name: str
    kind: str
    status: str
    auth_method: str
    redirect_uris: list[str]
    post_logout_redirect_uris: list[str]
    grant_types: list[str]
    scopes: list[str]
    id_token_alg: str
    sector_identifier: str
    backchannel_logout_uri: str | None
    can_introspect_any: bool
    created_at: dt.datetime


class ClientCreated(ClientOut):
    client_secret: str | None = Field(description="Shown once; only a keyed hash is stored.")


class ClientStatusIn(StrictModel):
    status: Literal["approved", "suspended"]
