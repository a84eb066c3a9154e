from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, CheckConstraint, ForeignKey, Index, Integer, SmallInteger, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, UTCDateTime


class AccountStatus(StrEnum):
    pending = "pending"
    active = "active"
    locked = "locked"
    revoked = "revoked"


class Account(Base):
    """The one e-ID account of a registry record; its username is the ID number."""

    __tablename__ = "accounts"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    id_number: Mapped[str] = mapped_column(
        String(12), ForeignKey("citizens.id_number", ondelete="RESTRICT"), unique=True
    )
    status: Mapped[str] = mapped_column(String(10))
    level: Mapped[int] = mapped_column(SmallInteger)
    phone: Mapped[str | None] = mapped_column(String(16))
    email: Mapped[str | None] = mapped_column(String(254))
    password_hash: Mapped[str | None] = mapped_column(String(200))
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    guardian_account_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id", ondelete="RESTRICT"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    password_changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint("status IN ('pending', 'active', 'locked', 'revoked')", name="status"),
        CheckConstraint("level IN (1, 2)", name="level"),
        Index("ix_accounts_guardian_account_id", "guardian_account_id"),
    )


class OtpPurpose(StrEnum):
    registration = "registration"
    password_reset = "password_reset"


class OtpChallenge(Base):
    """A one-time code sent by SMS: a level-1 registration or a password reset.

    Requests that do not match the registry are stored too (``id_number`` NULL, no SMS sent),
    so that the caller cannot tell them apart from real ones.
    """

    __tablename__ = "otp_challenges"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    purpose: Mapped[str] = mapped_column(String(20))
    id_number: Mapped[str | None] = mapped_column(String(12), ForeignKey("citizens.id_number", ondelete="CASCADE"))
    phone: Mapped[str] = mapped_column(String(16))
    code_hash: Mapped[str] = mapped_column(String(64))
    attempts_left: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_otp_challenges_id_number", "id_number"),)


class OfficerRegistrationStatus(StrEnum):
    submitted = "submitted"  # step 1: contact details, dependents, documents
    card_attached = "card_attached"  # step 2: chip ID card application attached
    approved = "approved"  # step 3: account created or upgraded to level 2
    rejected = "rejected"


class OfficerRegistration(Base):
    """Level-2 registration at a police office: three steps, each a state transition."""

    __tablename__ = "officer_registrations"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    id_number: Mapped[str] = mapped_column(String(12), ForeignKey("citizens.id_number", ondelete="RESTRICT"))
    status: Mapped[str] = mapped_column(String(20))
    phone: Mapped[str] = mapped_column(String(16))
    email: Mapped[str | None] = mapped_column(String(254))
    dependents: Mapped[list[str]] = mapped_column(JSON)
    card_application: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    reason: Mapped[str | None] = mapped_column(String(500))
    account_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id", ondelete="RESTRICT"))
    submitted_by: Mapped[str] = mapped_column(String(64))
    card_attached_by: Mapped[str | None] = mapped_column(String(64))
    decided_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint("status IN ('submitted', 'card_attached', 'approved', 'rejected')", name="status"),
        Index("ix_officer_registrations_id_number", "id_number"),
        # At most one open registration per citizen.
        Index(
            "uq_officer_registrations_open_id_number",
            "id_number",
            unique=True,
            postgresql_where=text("status IN ('submitted', 'card_attached')"),
            sqlite_where=text("status IN ('submitted', 'card_attached')"),
        ),
    )


class DeclaredDocument(Base):
    """A document the citizen asked to integrate at step 1, kept for the issuing agency to confirm."""

    __tablename__ = "declared_documents"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    registration_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("officer_registrations.id", ondelete="CASCADE"))
    id_number: Mapped[str] = mapped_column(String(12))
    doc_type: Mapped[str] = mapped_column(String(40))
    number: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(12), default="declared")

    __table_args__ = (
        Index("ix_declared_documents_registration_id", "registration_id"),
        Index("ix_declared_documents_doc_type_number", "doc_type", "number"),
    )


class CitizenSession(Base):
    """A signed-in citizen: the server-side row behind a bearer token (the app) or, later, the
    login cookie of the OpenID Connect pages. Only the token's keyed hash is stored."""

    __tablename__ = "citizen_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    # Public session ID for ID tokens (`sid`) and back-channel logout; not a credential.
    sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    acr: Mapped[str | None] = mapped_column(String(40))
    auth_time: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    amr: Mapped[str] = mapped_column(String(40))
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_citizen_sessions_account_id", "account_id"),)
