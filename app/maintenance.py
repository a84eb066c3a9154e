"""Deleting what has expired and can no longer matter (run `eid purge-expired` from cron): an
operation over every domain's tables, so it sits with the application, above the domains.

Audit rows are never purged here; they are append-only."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import CitizenSession, ClaimApproval, OtpChallenge, OtpFailure
from app.admin.models import StaffSession
from app.core.ratelimit import RateLimit
from app.documents.models import IdempotencyRecord
from app.oidc.models import (
    AuthorizationCode,
    AuthorizationRequest,
    LogoutNotification,
    RefreshToken,
    RevokedAccessToken,
    UsedAssertion,
)
from app.sharing.models import Share

# Kept a day past expiry so that a late replay still meets a "used" row, not an unknown one.
GRACE = dt.timedelta(days=1)


async def purge_expired(session: AsyncSession, now: dt.datetime) -> dict[str, int]:
    cutoff = now - GRACE
    counts: dict[str, int] = {}
    for name, stmt in (
        ("authorization_requests", delete(AuthorizationRequest).where(AuthorizationRequest.expires_at < now)),
        ("authorization_codes", delete(AuthorizationCode).where(AuthorizationCode.expires_at < cutoff)),
        ("refresh_tokens", delete(RefreshToken).where(RefreshToken.expires_at < cutoff)),
        ("revoked_access_tokens", delete(RevokedAccessToken).where(RevokedAccessToken.expires_at < now)),
        ("used_assertions", delete(UsedAssertion).where(UsedAssertion.expires_at < now)),
        ("otp_challenges", delete(OtpChallenge).where(OtpChallenge.expires_at < cutoff)),
        # Wrong codes count for EID_OTP_FAILURE_WINDOW_HOURS (at most 30 days).
        ("otp_failures", delete(OtpFailure).where(OtpFailure.at < now - dt.timedelta(days=31))),
        ("claim_approvals", delete(ClaimApproval).where(ClaimApproval.expires_at < cutoff)),
        ("rate_limits", delete(RateLimit).where(RateLimit.expires_at < now)),
        ("citizen_sessions", delete(CitizenSession).where(CitizenSession.expires_at < cutoff)),
        ("staff_sessions", delete(StaffSession).where(StaffSession.expires_at < cutoff)),
        ("idempotency_keys", delete(IdempotencyRecord).where(IdempotencyRecord.expires_at < now)),
        # Expired shares still hold their sealed token, and nothing can redeem them any more.
        ("shares", delete(Share).where(Share.expires_at < cutoff)),
        (
            "logout_notifications",
            delete(LogoutNotification).where(
                LogoutNotification.status != "queued", LogoutNotification.created_at < cutoff
            ),
        ),
    ):
        result = await session.execute(stmt)
        counts[name] = int(getattr(result, "rowcount", 0) or 0)
    await session.commit()
    return counts
