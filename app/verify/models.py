from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum

from sqlalchemy import JSON, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, UTCDateTime


class EkycStatus(StrEnum):
    pending = "pending"
    approved = "approved"
    denied = "denied"


class EkycRequest(Base):
    """A bank's request for a citizen's verified data, answered by the citizen in their account
    (decoupled, in the style of OpenID CIBA poll mode). Requests naming an unknown ID number are
    stored too and simply never get approved: the bank cannot tell them apart."""

    __tablename__ = "ekyc_requests"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.client_id", ondelete="CASCADE"))
    id_number: Mapped[str] = mapped_column(String(12))
    claims: Mapped[list[str]] = mapped_column(JSON)
    purpose: Mapped[str] = mapped_column(String(300))
    binding_message: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(10))
    consent_id: Mapped[uuid.UUID | None] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_ekyc_requests_id_number_status", "id_number", "status"),)
