from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum

from sqlalchemy import JSON, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, UTCDateTime


class ConsentKind(StrEnum):
    oidc = "oidc"  # a portal's scopes, remembered per client and scope set
    ekyc = "ekyc"  # one e-KYC request approved by the citizen
    share = "share"  # a QR share


class Consent(Base):
    """What a citizen agreed to disclose, to whom, for what; revocable."""

    __tablename__ = "consents"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    # None: any verifier (a QR share shown to whoever scans it).
    client_id: Mapped[str | None] = mapped_column(ForeignKey("oauth_clients.client_id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(8), default=ConsentKind.oidc.value)
    scope: Mapped[str] = mapped_column(String(500))
    claims: Mapped[list[str]] = mapped_column(JSON, default=list)
    purpose: Mapped[str | None] = mapped_column(String(300))
    granted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_consents_account_id_client_id", "account_id", "client_id"),)
