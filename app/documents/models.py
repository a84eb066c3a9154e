"""Integrated documents issued by agencies, the document types each agency may issue, and
the idempotency keys of agency writes."""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Date, ForeignKey, Index, SmallInteger, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, UTCDateTime


class DocumentStatus(StrEnum):
    """What an agency sets. ``expired`` is not stored: it follows from the expiry date."""

    valid = "valid"
    suspended = "suspended"
    revoked = "revoked"


class IntegratedDocument(Base):
    """A driving licence, vehicle registration, health or social insurance record, as the
    issuing agency declared it; shown in the citizen's account in place of the paper one."""

    __tablename__ = "documents"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    doc_type: Mapped[str] = mapped_column(String(40))
    number: Mapped[str] = mapped_column(String(40))
    holder_id_number: Mapped[str] = mapped_column(String(12), ForeignKey("citizens.id_number", ondelete="RESTRICT"))
    category: Mapped[str | None] = mapped_column(String(40))  # licence class, vehicle kind
    issued_on: Mapped[dt.date] = mapped_column(Date)
    expires_on: Mapped[dt.date | None] = mapped_column(Date)  # None: does not expire
    issuer_client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.client_id", ondelete="RESTRICT"))
    status: Mapped[str] = mapped_column(String(10))
    status_reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint("status IN ('valid', 'suspended', 'revoked')", name="status"),
        CheckConstraint(
            "doc_type IN ('driving_licence', 'vehicle_registration', 'health_insurance', 'social_insurance')",
            name="doc_type",
        ),
        # One document per number and type, whoever issued it.
        UniqueConstraint("doc_type", "number"),
        Index("ix_documents_holder_id_number", "holder_id_number"),
    )


class DocumentIssuerType(Base):
    """A document type an agency (a client with the ``documents:issue`` scope) may issue.

    Kept in a table rather than in configuration: administrators grant and withdraw it at
    run time (``PUT /admin/clients/{client_id}/document-types``), every replica sees the
    change at once, and each change is audited."""

    __tablename__ = "document_issuer_types"

    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.client_id", ondelete="CASCADE"), primary_key=True)
    doc_type: Mapped[str] = mapped_column(String(40), primary_key=True)
    granted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    granted_by: Mapped[str] = mapped_column(String(64))


class IdempotencyRecord(Base):
    """The answer to an agency write, kept under the client's ``Idempotency-Key`` so that a
    retry gets the same answer instead of a second write (any replica can answer it)."""

    __tablename__ = "idempotency_keys"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))  # SHA-256 of the operation and its body
    status_code: Mapped[int] = mapped_column(SmallInteger)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)
