from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, UTCDateTime


class Share(Base):
    """A QR share: the attributes a citizen (or their guardian) chose to show, to any verifier or
    to one named client, for at most 10 minutes, redeemable online once.

    The signed SD-JWT is kept sealed (AES-GCM under the key-encryption key) only so that the
    owner can render its QR again and a reference share can be redeemed; its Consent row (kind
    ``share``) is what the access log cites."""

    __tablename__ = "shares"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # 128-bit random, opaque
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))  # whose data
    created_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))  # self or guardian
    consent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("consents.id", ondelete="CASCADE"))
    audience_client_id: Mapped[str | None] = mapped_column(ForeignKey("oauth_clients.client_id", ondelete="CASCADE"))
    attributes: Mapped[list[str]] = mapped_column(JSON)
    document_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    form: Mapped[str] = mapped_column(String(10))  # sd-jwt (in the QR) | reference (eidshare:<id>)
    token_sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    redeemed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    redeemed_by: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        CheckConstraint("form IN ('sd-jwt', 'reference')", name="form"),
        Index("ix_shares_created_by_created_at", "created_by", "created_at"),
    )
