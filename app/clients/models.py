from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, UTCDateTime


class Client(Base):
    """A relying party: public-service portal, bank or agency. Only approved clients start flows."""

    __tablename__ = "oauth_clients"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))  # portal | bank | agency | admin
    status: Mapped[str] = mapped_column(String(12))  # pending | approved | suspended
    secret_hash: Mapped[str | None] = mapped_column(String(64))  # HMAC-SHA256; None for public or private_key_jwt
    auth_method: Mapped[str] = mapped_column(
        String(32)
    )  # client_secret_basic | client_secret_post | private_key_jwt | none
    redirect_uris: Mapped[list[str]] = mapped_column(JSON)
    post_logout_redirect_uris: Mapped[list[str]] = mapped_column(JSON)
    grant_types: Mapped[list[str]] = mapped_column(JSON)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    id_token_alg: Mapped[str] = mapped_column(String(8))
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    jwks_uri: Mapped[str | None] = mapped_column(String(500))
    sector_identifier: Mapped[str] = mapped_column(String(255))
    backchannel_logout_uri: Mapped[str | None] = mapped_column(String(500))
    can_introspect_any: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
