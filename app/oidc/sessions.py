"""The login session cookie: a random token, HMAC-signed, HttpOnly, SameSite=Lax, Secure when
the issuer is https; the server-side row (``citizen_sessions``) is the truth."""

from __future__ import annotations

import datetime as dt
import hmac

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from app.accounts.models import CitizenSession
from app.oidc.provider import Provider

SESSION_COOKIE = "eid_session"


def _sign(provider: Provider, token: str) -> str:
    return provider.ctx.keyring.keyed_hash("session-cookie", token)[:32]


def _secure(provider: Provider) -> bool:
    configured = provider.ctx.settings.cookie_secure
    return configured if configured is not None else provider.issuer.startswith("https://")


def set_session_cookie(response: Response, provider: Provider, token: str, expires_at: dt.datetime) -> None:
    response.set_cookie(
        SESSION_COOKIE, f"{token}.{_sign(provider, token)}", expires=expires_at, path="/",
        secure=_secure(provider), httponly=True, samesite="lax",
    )  # fmt: skip


def clear_session_cookie(response: Response, provider: Provider) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", secure=_secure(provider), httponly=True, samesite="lax")


async def current_login_session(
    request: Request, provider: Provider, session: AsyncSession, now: dt.datetime
) -> CitizenSession | None:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw or len(raw) > 200 or "." not in raw:
        return None
    token, sig = raw.rsplit(".", 1)
    if not hmac.compare_digest(sig.encode(), _sign(provider, token).encode()):
        return None
    row = await session.scalar(
        select(CitizenSession).where(
            CitizenSession.token_hash == provider.ctx.keyring.keyed_hash("citizen-session", token)
        )
    )
    if row is None or row.revoked_at is not None or row.expires_at <= now or row.sid is None:
        return None
    return row
