"""RP-Initiated Logout 1.0 (``/logout`` with ``id_token_hint`` and a registered
``post_logout_redirect_uri``) and Back-Channel Logout 1.0 (logout tokens queued in an outbox
and posted by a worker to every client of the session that registered a URI)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, Request
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.accounts.models import CitizenSession
from app.accounts.service import AccessEnded
from app.consent.models import ConsentKind
from app.consent.service import ConsentWithdrawn
from app.core import audit
from app.core.audit import Actor
from app.core.db import note_revocation
from app.core.errors import page_responses
from app.core.jose import JwtRejected, epoch, new_jti, verify_jwt
from app.core.outbox import deliver_due
from app.core.pages import locale_from, page_locale
from app.oidc.claims import pairwise_sub
from app.oidc.endpoints import read_form
from app.oidc.models import Grant, LogoutNotification
from app.oidc.pages import error_page, pages, render
from app.oidc.provider import Provider, get_provider
from app.oidc.sessions import clear_session_cookie, current_login_session

log = logging.getLogger("eid.logout")
router = APIRouter(tags=["openid-connect"])
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"


async def _hint_claims(provider: Provider, hint: str, now: dt.datetime) -> dict[str, Any] | None:
    async def key_for(kid: str | None, alg: str) -> Any | None:
        key = await provider.keys.verification_key(kid, now) if kid else None
        return key.verifier if key is not None and key.alg == alg else None

    try:
        # An expired ID token is still a good hint (RP-Initiated Logout §2); the signature is not optional.
        return await verify_jwt(
            hint,
            key_for,
            now=now,
            issuer=provider.issuer,
            audience=None,
            require=("aud", "sub"),
            leeway=10 * 365 * 86400,
        )
    except JwtRejected:
        return None


_LOGOUT = {
    "summary": "RP-Initiated Logout",
    "response_class": HTMLResponse,
    "responses": page_responses(redirects="To the client's registered post_logout_redirect_uri"),
}


@router.get("/logout", operation_id="logout_get", **_LOGOUT)  # type: ignore[arg-type]
@router.post("/logout", operation_id="logout_post", **_LOGOUT)  # type: ignore[arg-type]
async def logout(request: Request) -> Response:
    provider = get_provider(request)
    now = provider.ctx.clock.now()
    params = dict(request.query_params) if request.method == "GET" else await read_form(request)
    locale = page_locale(request, locale_from(params.get("ui_locales"), request.headers.get("accept-language")))
    t = pages.words(locale)
    hint = params.get("id_token_hint")
    claims = await _hint_claims(provider, hint, now) if hint else None
    if hint and claims is None:
        return error_page(request, locale, t["bad_hint"])
    client_id = params.get("client_id") or (claims["aud"] if claims and isinstance(claims["aud"], str) else None)
    if claims and params.get("client_id") and claims["aud"] != params["client_id"]:
        return error_page(request, locale, t["hint_client"])
    target = params.get("post_logout_redirect_uri")
    if target:
        client = await provider.clients.get(client_id) if client_id else None
        if client is None or target not in client.post_logout_redirect_uris:
            return error_page(request, locale, t["bad_logout_redirect"])
    async with provider.ctx.sessionmaker() as session:
        login = await current_login_session(request, provider, session, now)
        # Without a hint naming this session, ask the citizen first (CSRF-safe POST).
        hinted_here = claims is not None and login is not None and claims.get("sid") == login.sid
        if login is not None and not hinted_here and params.get("confirm") != "yes":
            hidden = {
                k: v
                for k, v in params.items()
                if k in ("post_logout_redirect_uri", "state", "client_id", "ui_locales", "id_token_hint")
            }
            hidden["confirm"] = "yes"
            if request.method == "GET" or claims is None:
                return render(
                    request,
                    "message.html",
                    locale,
                    heading=t["logout_heading"],
                    message=t["logout_confirm"],
                    is_error=False,
                    form_action="/logout",
                    hidden=hidden,
                    button=t["logout"],
                    links=[],
                )
        if login is not None and (request.method == "POST" or hinted_here):
            await end_session(provider, session, login, now)
    response: Response
    if target:
        sep = "&" if "?" in target else "?"
        query = urlencode({"state": params["state"]}) if params.get("state") else ""
        response = RedirectResponse(f"{target}{sep}{query}" if query else target, status_code=303)
    else:
        response = render(
            request,
            "message.html",
            locale,
            heading=t["logout_heading"],
            message=t["logged_out"],
            is_error=False,
            form_action=None,
            hidden={},
            links=[],
        )
    clear_session_cookie(response, provider)
    return response


async def _queue_logout(
    provider: Provider, session: AsyncSession, grant: Grant, sid: str | None, now: dt.datetime
) -> str | None:
    """Queue a logout token for the grant's client when it registered a back-channel URI;
    returns the client_id notified."""
    client = await provider.clients.get(grant.client_id)
    if client is None or not client.backchannel_logout_uri:
        return None
    claims: dict[str, Any] = {
        "iss": provider.issuer, "aud": client.client_id, "iat": epoch(now), "exp": epoch(now) + 120, "jti": new_jti(),
        "sub": pairwise_sub(provider.ctx.keyring, client.sector_identifier, str(grant.account_id)),
        "events": {BACKCHANNEL_EVENT: {}},
    }  # fmt: skip
    if sid:  # Back-Channel Logout 1.0 §2.4: sub, sid or both; without sid, every session of sub
        claims["sid"] = sid
    token = await provider.keys.sign(claims, client.id_token_alg, now, typ="logout+jwt")
    session.add(
        LogoutNotification(
            client_id=client.client_id, uri=client.backchannel_logout_uri, logout_token=token, status="queued",
            attempts=0, next_attempt_at=now, created_at=now,
        )
    )  # fmt: skip
    return client.client_id


async def end_session(provider: Provider, session: AsyncSession, login: CitizenSession, now: dt.datetime) -> None:
    """End the login session, revoke its grants (but not offline_access ones) and queue
    back-channel logout tokens for its clients."""
    await session.execute(
        update(CitizenSession).where(CitizenSession.token_hash == login.token_hash).values(revoked_at=now)
    )
    grants = (await session.scalars(select(Grant).where(Grant.sid == login.sid, Grant.revoked_at.is_(None)))).all()
    notified: set[str] = set()
    if grants:
        await note_revocation(session)
    for grant in grants:
        if "offline_access" not in grant.scope.split():
            grant.revoked_at, grant.revoked_reason = now, "logout"
        if grant.client_id not in notified and (
            client_id := await _queue_logout(provider, session, grant, login.sid, now)
        ):
            notified.add(client_id)
    audit.record(
        session,
        actor=Actor("citizen", str(login.account_id)),
        action="oidc.logout",
        outcome="ok",
        now=now,
        detail={"grants": len(grants), "notified": sorted(notified)},
    )
    await session.commit()


async def on_access_ended(provider: Provider, session: AsyncSession, event: AccessEnded) -> None:
    """A citizen's credentials or account state changed (app/accounts/service.py end_access):
    revoke every grant of theirs, as subject or as a guardian acting for a dependent, except
    those of the session that made the change, so that refresh tokens stop working and the
    access tokens minted under them answer inactive at once (every process forgets its cache
    on the revocation's NOTIFY, app/oidc/livecheck.py); and tell the portals by back-channel,
    one logout token per client and session (RFC 9700 §4.14.2 on credential change)."""
    grants = (
        await session.scalars(
            select(Grant).where(
                or_(Grant.account_id == event.account_id, Grant.actor_account_id == event.account_id),
                Grant.revoked_at.is_(None),
            )
        )
    ).all()
    revoked = [g for g in grants if event.kept_sid is None or g.sid != event.kept_sid]
    await _revoke_and_tell(provider, session, revoked, event.reason, event.now, target=str(event.account_id))


async def on_consent_withdrawn(provider: Provider, session: AsyncSession, event: ConsentWithdrawn) -> None:
    """An OpenID consent withdrawn: the client's grants for the citizen end (and its tokens).
    e-KYC and share consents have no grants."""
    if event.kind != ConsentKind.oidc or event.client_id is None:
        return
    grants = (
        await session.scalars(
            select(Grant).where(
                Grant.account_id == event.account_id, Grant.client_id == event.client_id, Grant.revoked_at.is_(None)
            )
        )
    ).all()
    await _revoke_and_tell(
        provider, session, list(grants), "consent_withdrawn", event.now, target=str(event.account_id), tell=False
    )


async def _revoke_and_tell(
    provider: Provider,
    session: AsyncSession,
    revoked: list[Grant],
    reason: str,
    now: dt.datetime,
    *,
    target: str,
    tell: bool = True,
) -> None:
    """Revoke the grants, and (``tell``) queue one logout token per client and session."""
    told: set[tuple[str, str | None]] = set()
    if revoked:
        await note_revocation(session)
    for grant in revoked:
        grant.revoked_at, grant.revoked_reason = now, reason[:40]
        key = (grant.client_id, grant.sid)
        if tell and key not in told:
            told.add(key)
            await _queue_logout(provider, session, grant, grant.sid, now)
    if revoked and tell:
        audit.record(
            session, actor=Actor("system"), action="oauth.grant.revoke", outcome="ok", now=now,
            target=target, detail={"reason": reason, "grants": len(revoked)},
        )  # fmt: skip


async def deliver_logout_notifications(
    sessionmaker: async_sessionmaker[AsyncSession], http: httpx.AsyncClient, *, now: dt.datetime, max_attempts: int = 5
) -> int:
    """One delivery pass (app/core/outbox.py: no transaction is open while a portal is called)."""

    async def post(notification: tuple[str, str]) -> None:
        uri, token = notification
        resp = await http.post(uri, data={"logout_token": token}, timeout=5.0)
        if resp.status_code not in (200, 204):
            raise RuntimeError(f"the portal answered {resp.status_code}")

    return await deliver_due(
        sessionmaker,
        LogoutNotification,
        now=now,
        max_attempts=max_attempts,
        backoff=lambda attempts: dt.timedelta(seconds=min(2**attempts, 300)),
        prepare=lambda row: (row.uri, row.logout_token),
        send=post,
        record=lambda _row, _error: None,
    )


async def logout_delivery_loop(provider: Provider, stop: asyncio.Event) -> None:
    """Deliver queued logout tokens about once a second until ``stop`` is set (a pass in
    progress finishes first, so shutdown never cuts a database transaction in half)."""
    while not stop.is_set():
        try:
            await deliver_logout_notifications(provider.ctx.sessionmaker, provider.http, now=provider.ctx.clock.now())
        except Exception:  # the loop must survive a database hiccup
            log.exception("back-channel logout pass failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)
