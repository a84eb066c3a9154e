"""The authorization code flow (RFC 6749 §4.1, OpenID Connect Core §3.1.2): what a request must
hold, and, once the citizen has signed in, what comes next: a forced password change, the
choice of whom to act for, consent, then the code, or an error sent back to the client.

No HTML here: app/oidc/pages.py shows each step and posts the citizen's answers back. Every
step runs in the caller's session; the functions that write commit.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import service as accounts
from app.accounts.models import Account, AccountStatus, CitizenSession
from app.clients.service import USER_SCOPES, ClientInfo
from app.consent.models import Consent, ConsentKind
from app.core import audit
from app.core.audit import Actor
from app.core.crypto import random_token
from app.oidc import pkce
from app.oidc.claims import ACR_LEVEL, SCOPE_CLAIMS
from app.oidc.models import AuthorizationCode, AuthorizationRequest, Grant
from app.oidc.provider import Provider

# The request parameters kept with the authorization request for its later steps.
KEPT = (
    "client_id", "redirect_uri", "scope", "state", "nonce", "code_challenge", "prompt", "max_age", "acr_values",
    "ui_locales", "login_hint",
)  # fmt: skip


class RedirectableError(Exception):
    """A refusal that goes back to the client's (already verified) redirect URI (RFC 6749 §4.1.2.1)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def validate_request(client: ClientInfo, params: dict[str, str]) -> None:
    """RFC 6749 §4.1.1, RFC 7636 §4.3 (S256 only), OpenID Connect Core §3.1.2.1."""
    if "request" in params:
        raise RedirectableError("request_not_supported", "Request objects are not supported.")
    if "request_uri" in params:
        raise RedirectableError("request_uri_not_supported", "request_uri is not supported.")
    if params.get("response_type") != "code":
        raise RedirectableError("unsupported_response_type", "Only response_type=code is supported.")
    if "authorization_code" not in client.grant_types:
        raise RedirectableError("unauthorized_client", "This client may not use the authorization code flow.")
    if params.get("response_mode", "query") != "query":
        raise RedirectableError("invalid_request", "Only response_mode=query is supported.")
    scopes = params.get("scope", "").split()
    if "openid" not in scopes:
        raise RedirectableError("invalid_scope", "The openid scope is required.")
    unknown = set(scopes) - (client.scopes & set(USER_SCOPES))
    if unknown:
        raise RedirectableError("invalid_scope", f"Not allowed for this client: {' '.join(sorted(unknown))}.")
    method = params.get("code_challenge_method")
    if not params.get("code_challenge") or method != "S256" or not pkce.valid_challenge(params["code_challenge"]):
        raise RedirectableError("invalid_request", "PKCE with code_challenge_method=S256 is required.")
    prompts = set(params.get("prompt", "").split())
    if prompts - {"none", "login", "consent"}:
        raise RedirectableError("invalid_request", "Unsupported prompt value.")
    if "none" in prompts and len(prompts) > 1:
        raise RedirectableError("invalid_request", "prompt=none cannot be combined.")
    if "max_age" in params and not (params["max_age"].isdigit() and len(params["max_age"]) <= 9):
        raise RedirectableError("invalid_request", "max_age must be a number of seconds.")
    for name in ("state", "nonce", "login_hint", "acr_values", "ui_locales"):
        if len(params.get(name, "")) > 512:
            raise RedirectableError("invalid_request", f"{name} is too long.")


def required_level(params: dict[str, Any]) -> int:
    asked = params.get("acr_values", "").split()
    return 2 if ACR_LEVEL[2] in asked else 1


def new_request(
    provider: Provider,
    client: ClientInfo,
    params: dict[str, str],
    *,
    locale: str,
    browser: str | None,
    now: dt.datetime,
) -> AuthorizationRequest:
    """A validated request, waiting for its next steps; bound to the browser that started it."""
    kept = {k: params[k] for k in KEPT if k in params}
    kept["locale"] = locale
    return AuthorizationRequest(
        id=random_token(24), client_id=client.client_id, params=kept, csrf=random_token(24), browser_hash=browser,
        created_at=now, expires_at=now + dt.timedelta(seconds=provider.ctx.settings.authorization_request_ttl_seconds),
    )  # fmt: skip


def can_skip_login(req: AuthorizationRequest, login: CitizenSession | None, now: dt.datetime) -> bool:
    """An existing sign-in serves unless prompt=login, or max_age says it is too old (OIDC §3.1.2.1)."""
    params = req.params
    if login is None or "login" in set(params.get("prompt", "").split()):
        return False
    return "max_age" not in params or (now - login.auth_time).total_seconds() <= int(params["max_age"])


# --- what comes next ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToClient:
    """Back to the client's redirect URI with these parameters (a code, or an error)."""

    redirect_uri: str
    params: dict[str, str | None]


@dataclass(frozen=True, slots=True)
class ChangePassword:
    pass


@dataclass(frozen=True, slots=True)
class ChooseSubject:
    dependents: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class AskConsent:
    who: str | None  # None: the citizen; else the dependent's name
    scopes: list[str]
    claims: dict[str, list[str]] = field(default_factory=dict)


Step = ToClient | ChangePassword | ChooseSubject | AskConsent


def _error(req: AuthorizationRequest, error: str, description: str) -> ToClient:
    params = req.params
    return ToClient(
        params["redirect_uri"], {"error": error, "error_description": description, "state": params.get("state")}
    )


def _scope(req: AuthorizationRequest) -> str:
    return " ".join(sorted(set(req.params["scope"].split())))


async def dependents(session: AsyncSession, account: Account) -> list[dict[str, Any]]:
    """Whom a guardian may act for: their active dependents under 14."""
    rows = await accounts.dependents_of(session, account)
    return [
        {"account_id": str(a.id), "full_name": c.full_name, "date_of_birth": c.date_of_birth.isoformat()}
        for a, c in rows
        if a.status == AccountStatus.active
    ]


async def next_step(
    provider: Provider, session: AsyncSession, req: AuthorizationRequest, client: ClientInfo, login: CitizenSession
) -> Step:
    """After sign-in: checks, then subject choice, then consent, then the code."""
    params = req.params
    prompts = set(params.get("prompt", "").split())
    account = await session.get(Account, login.account_id, populate_existing=True)
    if account is None or account.status != AccountStatus.active:
        return _error(req, "access_denied", "The account cannot sign in.")
    if account.must_change_password:
        if "none" in prompts:
            return _error(req, "interaction_required", "The citizen must change their password.")
        return ChangePassword()
    # Never a token with a lower acr than asked for (acr_values treated as essential).
    if account.level < required_level(params):
        await finish(session, req)
        return _error(
            req, "unmet_authentication_requirements",
            "This service needs a level-2 e-ID account: register in person at a police office.",
        )  # fmt: skip
    choices = await dependents(session, account)
    if choices and req.subject_account_id is None and "none" not in prompts:
        return ChooseSubject(choices)
    subject_id = req.subject_account_id or account.id
    consent = await session.scalar(
        select(Consent).where(
            Consent.account_id == subject_id, Consent.client_id == client.client_id, Consent.scope == _scope(req),
            Consent.kind == ConsentKind.oidc.value, Consent.revoked_at.is_(None),
        )
    )  # fmt: skip
    if consent is None or "consent" in prompts:
        if "none" in prompts:
            return _error(req, "consent_required", "The citizen has not consented.")
        who = None
        if subject_id != account.id:
            who = next((d["full_name"] for d in choices if d["account_id"] == str(subject_id)), None)
        scopes = [s for s in USER_SCOPES if s in _scope(req).split()]
        return AskConsent(who, scopes, {s: [c for c in SCOPE_CLAIMS.get(s, ()) if c != "sub"] for s in scopes})
    return await issue_code(provider, session, req, client, login, account, subject_id, consent.id)


async def finish(session: AsyncSession, req: AuthorizationRequest) -> None:
    await session.execute(delete(AuthorizationRequest).where(AuthorizationRequest.id == req.id))
    await session.commit()


async def choose_subject(session: AsyncSession, req: AuthorizationRequest, account: Account, choice: str) -> bool:
    """Act for oneself ("self") or for one of one's dependents; False when it is not one of them."""
    if choice == "self":
        req.subject_account_id = account.id
    else:
        allowed = {d["account_id"] for d in await dependents(session, account)}
        if choice not in allowed:
            return False
        req.subject_account_id = uuid.UUID(choice)
    await session.commit()
    return True


async def deny(
    session: AsyncSession, req: AuthorizationRequest, client: ClientInfo, account: Account, now: dt.datetime
) -> ToClient:
    audit.record(
        session, actor=Actor("citizen", str(account.id)), action="oidc.consent", outcome="denied", now=now,
        detail={"client": client.client_id},
    )  # fmt: skip
    step = _error(req, "access_denied", "The citizen denied the request.")
    await finish(session, req)
    return step


async def consent_and_issue(
    provider: Provider,
    session: AsyncSession,
    req: AuthorizationRequest,
    client: ClientInfo,
    login: CitizenSession,
    account: Account,
    now: dt.datetime,
) -> ToClient:
    """The citizen allowed it: their consent is remembered (per client and scope set), and the code issued."""
    subject_id = req.subject_account_id or account.id
    scope = _scope(req)
    claims = sorted({c for s in scope.split() for c in SCOPE_CLAIMS.get(s, ()) if c != "sub"})
    consent = Consent(
        id=uuid.uuid4(), account_id=subject_id, client_id=client.client_id, kind=ConsentKind.oidc.value, scope=scope,
        claims=claims, granted_at=now,
    )  # fmt: skip
    session.add(consent)
    audit.record(
        session, actor=Actor("citizen", str(account.id)), action="oidc.consent", outcome="ok", now=now,
        detail={"client": client.client_id, "scope": scope},
    )  # fmt: skip
    await session.flush()
    return await issue_code(provider, session, req, client, login, account, subject_id, consent.id)


async def issue_code(
    provider: Provider,
    session: AsyncSession,
    req: AuthorizationRequest,
    client: ClientInfo,
    login: CitizenSession,
    account: Account,
    subject_id: uuid.UUID,
    consent_id: uuid.UUID,
) -> ToClient:
    """The grant and its single-use code (RFC 6749 §4.1.2), bound to the PKCE challenge."""
    now = provider.ctx.clock.now()
    params = req.params
    grant = Grant(
        id=uuid.uuid4(), client_id=client.client_id, account_id=subject_id, actor_account_id=account.id if subject_id != account.id else None,
        scope=_scope(req), acr=ACR_LEVEL[account.level], amr=login.amr, auth_time=login.auth_time,
        sid=login.sid, consent_id=consent_id, created_at=now,
    )  # fmt: skip
    session.add(grant)
    await session.flush()
    code = random_token()
    session.add(
        AuthorizationCode(
            code_hash=provider.ctx.keyring.keyed_hash("auth-code", code), grant_id=grant.id, client_id=client.client_id,
            redirect_uri=params["redirect_uri"], code_challenge=params["code_challenge"], nonce=params.get("nonce"),
            expires_at=now + dt.timedelta(seconds=provider.ctx.settings.authorization_code_ttl_seconds),
        )
    )  # fmt: skip
    subject = await session.get(Account, subject_id)
    audit.record(
        session, actor=Actor("citizen", str(account.id)), action="oidc.authorize", outcome="ok", now=now,
        target_id_number=subject.id_number if subject else None,
        detail={"client": client.client_id, "scope": grant.scope, "acting_for": str(subject_id) if grant.actor_account_id else None},
    )  # fmt: skip
    await session.execute(delete(AuthorizationRequest).where(AuthorizationRequest.id == req.id))
    await session.commit()
    return ToClient(params["redirect_uri"], {"code": code, "state": params.get("state")})


async def sign_in(
    provider: Provider,
    session: AsyncSession,
    req: AuthorizationRequest,
    account: Account,
    browser: str,
    now: dt.datetime,
) -> tuple[str, CitizenSession]:
    """A new login session for the request (its token for the cookie), and a new CSRF token."""
    ctx = provider.ctx
    token = random_token()
    login = CitizenSession(
        token_hash=ctx.keyring.keyed_hash("citizen-session", token), account_id=account.id, sid=random_token(16),
        acr=ACR_LEVEL[account.level], auth_time=now, amr="pwd", browser_hash=browser,
        expires_at=now + dt.timedelta(minutes=ctx.settings.citizen_session_minutes),
    )  # fmt: skip
    session.add(login)
    await accounts.note_browser(session, ctx, account, browser, now)
    req.session_hash = login.token_hash
    req.csrf = random_token(24)
    await session.commit()
    return token, login
