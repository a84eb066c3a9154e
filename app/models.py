"""Every table, imported once so that Alembic and the tests see the whole schema."""

from app.accounts.models import (
    Account,
    CitizenSession,
    ClaimApproval,
    DeclaredDocument,
    KnownBrowser,
    OfficerRegistration,
    OtpChallenge,
    OtpFailure,
)
from app.admin.models import StaffMember, StaffSession
from app.clients.models import Client
from app.consent.models import Consent
from app.core.audit import AccessLogEntry, AuditEvent
from app.core.db import Base
from app.core.keys import SigningKey
from app.core.notify import Notification
from app.core.ratelimit import RateLimit
from app.core.sms import EmailMessage, SmsMessage
from app.documents.models import DocumentIssuerType, IdempotencyRecord, IntegratedDocument
from app.oidc.models import (
    AuthorizationCode,
    AuthorizationRequest,
    Grant,
    LogoutNotification,
    RefreshToken,
    RevokedAccessToken,
    UsedAssertion,
)
from app.registry.models import Citizen, GuardianLink
from app.sharing.models import Share
from app.verify.models import EkycRequest

__all__ = [
    "AccessLogEntry",
    "Account",
    "AuditEvent",
    "AuthorizationCode",
    "AuthorizationRequest",
    "Base",
    "Citizen",
    "CitizenSession",
    "ClaimApproval",
    "Client",
    "Consent",
    "DeclaredDocument",
    "DocumentIssuerType",
    "EkycRequest",
    "EmailMessage",
    "Grant",
    "GuardianLink",
    "IdempotencyRecord",
    "IntegratedDocument",
    "KnownBrowser",
    "LogoutNotification",
    "Notification",
    "OfficerRegistration",
    "OtpChallenge",
    "OtpFailure",
    "RateLimit",
    "RefreshToken",
    "RevokedAccessToken",
    "Share",
    "SigningKey",
    "SmsMessage",
    "StaffMember",
    "StaffSession",
    "UsedAssertion",
]
