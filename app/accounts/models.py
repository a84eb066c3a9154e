from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    text,
)
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
    # One account per citizen at a time: a revoked account stays (with its audit trail) beside
    # the one an officer re-issues after in-person proofing; the partial unique index below
    # allows exactly one account that is not revoked per ID number.
    id_number: Mapped[str] = mapped_column(String(12), ForeignKey("citizens.id_number", ondelete="RESTRICT"))
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
    # The revoked account this one re-issues (officer, in person).
    replaces_account_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id", ondelete="RESTRICT"))

    __table_args__ = (
        CheckConstraint("status IN ('pending', 'active', 'locked', 'revoked')", name="status"),
        CheckConstraint("level IN (1, 2)", name="level"),
        Index("ix_accounts_guardian_account_id", "guardian_account_id"),
        Index("ix_accounts_id_number", "id_number"),
        Index(
            "uq_accounts_id_number_current",
            "id_number",
            unique=True,
            postgresql_where=text("status <> 'revoked'"),
            sqlite_where=text("status <> 'revoked'"),
        ),
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
    # Keyed hash of the ID number asked about, on every challenge (refused ones too), so that a
    # new challenge ends the earlier ones and wrong codes are counted the same way whatever
    # the registry holds.
    id_key: Mapped[str] = mapped_column(String(64))
    phone: Mapped[str] = mapped_column(String(16))
    # How the phone was linked to the citizen: registry, operator (subscriber registry) or guardian.
    phone_source: Mapped[str | None] = mapped_column(String(10))
    code_hash: Mapped[str] = mapped_column(String(64))
    attempts_left: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_otp_challenges_id_number", "id_number"),
        Index("ix_otp_challenges_id_key", "id_key"),
    )


class OtpFailure(Base):
    """One wrong code, counted per ID number (keyed hash) and per phone across challenges: past
    EID_OTP_FAILURES_PER_DAY in 24 hours, registration and reset are refused for a while."""

    __tablename__ = "otp_failures"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    id_key: Mapped[str] = mapped_column(String(64))
    phone: Mapped[str] = mapped_column(String(16))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_otp_failures_id_key_at", "id_key", "at"),
        Index("ix_otp_failures_phone_at", "phone", "at"),
    )


class ClaimApproval(Base):
    """A guardian's approval, from their own signed-in account, that a dependent who reached 14
    takes over their account with this phone (the phone then counts as linked to the citizen)."""

    __tablename__ = "claim_approvals"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    ward_account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    guardian_account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    phone: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_claim_approvals_ward_account_id", "ward_account_id"),)


class KnownBrowser(Base):
    """Browsers (the provider's device cookie, keyed-hashed) a citizen signed in from: a sign-in
    from one not seen before is notified."""

    __tablename__ = "known_browsers"

    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    browser_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    first_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime())


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
    # The browser (device cookie, keyed hash) of a login-page session; None for the app's API.
    browser_hash: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("ix_citizen_sessions_account_id", "account_id"),)
