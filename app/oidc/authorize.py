"""The authorization endpoint (RFC 6749 §4.1, OIDC Core §3.1.2) and the pages of the flow:
login, forced password change, choosing whom to act for, consent.

Pages are server-rendered (Jinja2), work without JavaScript, in Vietnamese by default and
English with ``ui_locales=en``. Every form carries the request's CSRF token, and once a
citizen has signed in the request is bound to their session cookie.
"""

from __future__ import annotations

import datetime as dt
import hmac
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from sqlalchemy import delete, select
from starlette.responses import RedirectResponse, Response

from app.accounts import service as accounts
from app.accounts.errors import AccountLocked, LoginFailed, WeakPassword
from app.accounts.models import Account, AccountStatus, CitizenSession
from app.clients.service import USER_SCOPES, ClientInfo
from app.consent.models import Consent, ConsentKind
from app.core import audit
from app.core.audit import Actor
from app.core.crypto import random_token
from app.core.errors import RateLimited
from app.core.notify import local_time
from app.core.pages import (
    Pages,
    browser_hash,
    device_of,
    locale_from,
    new_device,
    page_locale,
    same_browser,
    set_device_cookie,
)
from app.core.passwords import rule_message
from app.oidc import pkce
from app.oidc.claims import ACR_LEVEL, SCOPE_CLAIMS
from app.oidc.endpoints import read_form
from app.oidc.i18n import TEXT
from app.oidc.models import AuthorizationCode, AuthorizationRequest, Grant
from app.oidc.provider import Provider, get_provider
from app.oidc.sessions import current_login_session, set_session_cookie

router = APIRouter(tags=["openid-connect"], include_in_schema=True)
pages = Pages(Path(__file__).parent / "templates", TEXT)
render = pages.render


def error_page(request: Request, locale: str, message: str, status: int = 400, next_url: str | None = None) -> Response:
    return pages.message(request, locale, message, status=status, next_url=next_url)


def _locale(request: Request, req: AuthorizationRequest | None = None) -> str:
    return page_locale(request, req.params.get("locale") if req is not None else None)


def redirect_to_client(redirect_uri: str, provider: Provider, **params: str | None) -> Response:
    # RFC 9207: the issuer identifies itself in every authorization response.
    query = urlencode({k: v for k, v in {**params, "iss": provider.issuer}.items() if v is not None})
    sep = "&" if "?" in redirect_uri else "?"
    return RedirectResponse(f"{redirect_uri}{sep}{query}", status_code=303, headers={"Cache-Control": "no-store"})


class RedirectableError(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def _validate_request(client: ClientInfo, params: dict[str, str]) -> None:
    """The checks whose failures go back to the (already verified) redirect URI."""
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


@router.get("/authorize", summary="Authorization endpoint (code flow, PKCE S256)", operation_id="authorize_get")
@router.post("/authorize", summary="Authorization endpoint (code flow, PKCE S256)", operation_id="authorize_post")
async def authorize(request: Request) -> Response:
    provider = get_provider(request)
    params = dict(request.query_params) if request.method == "GET" else await read_form(request)
    started_in = locale_from(params.get("ui_locales"), request.headers.get("accept-language"))
    locale = page_locale(request, started_in)
    client = await provider.clients.get(params.get("client_id", "")[:64]) if params.get("client_id") else None
    # An unknown client or redirect URI gets an error page, never a redirect (RFC 6749 §4.1.2.1).
    if client is None or not client.approved:
        return error_page(request, locale, pages.words(locale)["bad_client"])
    redirect_uri = params.get("redirect_uri")
    if redirect_uri not in client.redirect_uris:
        return error_page(request, locale, pages.words(locale)["bad_redirect"])
    assert redirect_uri is not None
    state = params.get("state")
    try:
        _validate_request(client, params)
    except RedirectableError as exc:
        return redirect_to_client(
            redirect_uri, provider, error=exc.error, error_description=exc.description, state=state
        )
    now = provider.ctx.clock.now()
    kept: dict[str, str] = {
        k: params[k]
        for k in (
            "client_id",
            "redirect_uri",
            "scope",
            "state",
            "nonce",
            "code_challenge",
            "prompt",
            "max_age",
            "acr_values",
            "ui_locales",
            "login_hint",
        )
        if k in params
    }
    kept["locale"] = started_in
    # The request is bound to this browser (app/core/pages.py): only it can continue the flow.
    device = device_of(request) or new_device()
    req = AuthorizationRequest(
        id=random_token(24),
        client_id=client.client_id,
        params=kept,
        csrf=random_token(24),
        browser_hash=browser_hash(provider.ctx.keyring, device),
        created_at=now,
        expires_at=now + dt.timedelta(seconds=provider.ctx.settings.authorization_request_ttl_seconds),
    )
    response: Response
    async with provider.ctx.sessionmaker() as session:
        login = await current_login_session(request, provider, session, now)
        prompts = set(kept.get("prompt", "").split())
        fresh_enough = login is not None and (
            "max_age" not in kept or (now - login.auth_time).total_seconds() <= int(kept["max_age"])
        )
        if login is not None and fresh_enough and "login" not in prompts:
            req.session_hash = login.token_hash
            session.add(req)
            await session.commit()
            response = await continue_flow(request, provider, session, req, client, login)
        elif "none" in prompts:
            return redirect_to_client(
                redirect_uri,
                provider,
                error="login_required",
                error_description="The citizen is not signed in.",
                state=state,
            )
        else:
            session.add(req)
            await session.commit()
            response = RedirectResponse(f"/login?req={req.id}", status_code=303, headers={"Cache-Control": "no-store"})
    set_device_cookie(response, provider.ctx.settings, device)
    return response


async def _load_request(
    request: Request, provider: Provider, session: Any, req_id: str | None, now: dt.datetime
) -> AuthorizationRequest | Response:
    """The authorization request, if it is alive and this is the browser that started it;
    otherwise the page that says so (and nothing else happens)."""
    if not req_id or len(req_id) > 64:
        return error_page(request, _locale(request), pages.words(_locale(request))["expired"])
    req: AuthorizationRequest | None = await session.get(AuthorizationRequest, req_id)
    if req is None or req.expires_at <= now:
        return error_page(request, _locale(request), pages.words(_locale(request))["expired"])
    if not same_browser(provider.ctx.keyring, request, req.browser_hash):
        locale = _locale(request, req)
        return error_page(request, locale, pages.words(locale)["other_browser"], status=403, next_url="/")
    return req


def _csrf_ok(req: AuthorizationRequest, form: dict[str, str]) -> bool:
    return hmac.compare_digest(req.csrf.encode(), form.get("csrf", "").encode())


@router.get("/login", summary="Login page", include_in_schema=False)
async def login_page(request: Request, req: str = "") -> Response:
    provider = get_provider(request)
    async with provider.ctx.sessionmaker() as session:
        row = await _load_request(request, provider, session, req, provider.ctx.clock.now())
        if isinstance(row, Response):
            return row
        client = await provider.clients.get(row.client_id)
    hint = row.params.get("login_hint", "")
    return _login_form(request, row, client.name if client else "", hint)


def _login_form(
    request: Request,
    req: AuthorizationRequest,
    client_name: str,
    id_number: str,
    error: str | None = None,
    status: int = 200,
) -> Response:
    return render(
        request, "login.html", _locale(request, req), status, next_url=f"/login?req={req.id}", req=req.id,
        csrf=req.csrf, client_name=client_name, login_hint=id_number if id_number.isdigit() and len(id_number) == 12 else "",
        error=error,
    )  # fmt: skip


@router.post("/login", summary="Login form", include_in_schema=False)
async def login_submit(request: Request) -> Response:
    provider = get_provider(request)
    ctx = provider.ctx
    form = await read_form(request)
    now = ctx.clock.now()
    id_number, password = form.get("id_number", "").strip(), form.get("password", "")
    well_formed = len(id_number) == 12 and id_number.isascii() and id_number.isdigit()
    if well_formed:
        # Counted before anything else opens a transaction (app/core/ratelimit.py).
        try:
            await accounts.limit_sign_ins(ctx, id_number)
        except RateLimited as exc:
            locale = _locale(request)
            return pages.message(request, locale, pages.words(locale)["too_many"], status=429, headers=exc.headers)
    async with ctx.sessionmaker() as session:
        req = await _load_request(request, provider, session, form.get("req"), now)
        if isinstance(req, Response):
            return req
        locale = _locale(request, req)
        client = await provider.clients.get(req.client_id)
        if client is None or not _csrf_ok(req, form):
            return error_page(request, locale, pages.words(locale)["csrf_failed"], status=403)
        if not well_formed or not password or len(password) > 1024:
            await ctx.hasher.verify(password or "x", None)  # same cost as a real attempt
            return _login_form(request, req, client.name, id_number, pages.words(locale)["login_failed"], 401)
        try:
            account = await accounts.authenticate(
                session, ctx, id_number=id_number, password=password, allow_must_change=True
            )
        except LoginFailed:
            return _login_form(request, req, client.name, id_number, pages.words(locale)["login_failed"], 401)
        except AccountLocked as exc:
            return _login_form(request, req, client.name, id_number, _locked_message(locale, exc), 403)
        device = device_of(request)
        assert device is not None  # same_browser held
        seen = browser_hash(ctx.keyring, device)
        assert seen is not None
        token = random_token()
        login = CitizenSession(
            token_hash=ctx.keyring.keyed_hash("citizen-session", token), account_id=account.id, sid=random_token(16),
            acr=ACR_LEVEL[account.level], auth_time=now, amr="pwd", browser_hash=seen,
            expires_at=now + dt.timedelta(minutes=ctx.settings.citizen_session_minutes),
        )  # fmt: skip
        session.add(login)
        await accounts.note_browser(session, ctx, account, seen, now)
        req.session_hash = login.token_hash
        req.csrf = random_token(24)  # a new CSRF token once signed in
        await session.commit()
        response: Response
        if account.must_change_password:
            response = RedirectResponse(
                f"/login/password?req={req.id}", status_code=303, headers={"Cache-Control": "no-store"}
            )
        else:
            response = await continue_flow(request, provider, session, req, client, login)
    set_session_cookie(response, provider, token, login.expires_at)
    return response


def _locked_message(locale: str, exc: AccountLocked) -> str:
    until = exc.extra.get("locked_until")
    if until:
        return pages.words(locale)["locked_until"].format(until=local_time(dt.datetime.fromisoformat(until)))
    return pages.words(locale)["revoked" if exc.extra.get("account_status") == "revoked" else "locked_by_officer"]


async def _signed_in_request(
    request: Request, provider: Provider, session: Any, req_id: str | None, now: dt.datetime
) -> tuple[AuthorizationRequest, CitizenSession] | Response:
    """The request, bound to this browser and to the session signed in for it."""
    req = await _load_request(request, provider, session, req_id, now)
    if isinstance(req, Response):
        return req
    login = await current_login_session(request, provider, session, now)
    if login is None or req.session_hash != login.token_hash:
        locale = _locale(request, req)
        return error_page(request, locale, pages.words(locale)["expired"])
    return req, login


def _password_form(
    request: Request, req: AuthorizationRequest, min_length: int, error: str | None, status: int = 200
) -> Response:
    return render(
        request, "password.html", _locale(request, req), status, next_url=f"/login/password?req={req.id}", req=req.id,
        csrf=req.csrf, min_length=min_length, error=error,
    )  # fmt: skip


@router.get("/login/password", summary="Forced password change page", include_in_schema=False)
async def password_page(request: Request, req: str = "") -> Response:
    provider = get_provider(request)
    now = provider.ctx.clock.now()
    async with provider.ctx.sessionmaker() as session:
        bound = await _signed_in_request(request, provider, session, req, now)
    if isinstance(bound, Response):
        return bound
    return _password_form(request, bound[0], provider.ctx.settings.password_min_length, None)


@router.post("/login/password", summary="Forced password change form", include_in_schema=False)
async def password_submit(request: Request) -> Response:
    provider = get_provider(request)
    ctx = provider.ctx
    form = await read_form(request)
    now = ctx.clock.now()
    min_length = ctx.settings.password_min_length
    async with ctx.sessionmaker() as session:
        bound = await _signed_in_request(request, provider, session, form.get("req"), now)
        if isinstance(bound, Response):
            return bound
        req, login = bound
        locale = _locale(request, req)
        if not _csrf_ok(req, form):
            return error_page(request, locale, pages.words(locale)["csrf_failed"], status=403)
        account = await session.get(Account, login.account_id)
        assert account is not None
        try:
            # Every other session of the citizen ends; this one goes on (app/accounts/service.py).
            await accounts.change_password(
                session, ctx, id_number=account.id_number, current=form.get("current_password", ""),
                new=form.get("new_password", ""), keep_session=login.token_hash,
            )  # fmt: skip
        except WeakPassword as exc:
            message = " ".join(rule_message(r, locale, min_length) for r in exc.rules)
            return _password_form(request, req, min_length, message, 400)
        except LoginFailed:
            return _password_form(request, req, min_length, pages.words(locale)["login_failed"], 400)
        except AccountLocked as exc:
            return _password_form(request, req, min_length, _locked_message(locale, exc), 403)
        client = await provider.clients.get(req.client_id)
        assert client is not None
        fresh = await session.get(CitizenSession, login.token_hash, populate_existing=True)
        assert fresh is not None
        return await continue_flow(request, provider, session, req, client, fresh)


async def _dependents(session: Any, account: Account) -> list[dict[str, Any]]:
    rows = await accounts.dependents_of(session, account)
    return [
        {"account_id": str(a.id), "full_name": c.full_name, "date_of_birth": c.date_of_birth.isoformat()}
        for a, c in rows
        if a.status == AccountStatus.active
    ]


async def continue_flow(
    request: Request,
    provider: Provider,
    session: Any,
    req: AuthorizationRequest,
    client: ClientInfo,
    login: CitizenSession,
) -> Response:
    """After sign-in: checks, then subject choice, then consent, then the code."""
    params = req.params
    locale = _locale(request, req)
    here = f"/authorize/continue?req={req.id}"  # where the language switch brings the citizen back
    redirect_uri, state = params["redirect_uri"], params.get("state")
    prompts = set(params.get("prompt", "").split())
    account = await session.get(Account, login.account_id, populate_existing=True)
    if account is None or account.status != AccountStatus.active:
        return redirect_to_client(
            redirect_uri, provider, error="access_denied", error_description="The account cannot sign in.", state=state
        )
    if account.must_change_password:
        if "none" in prompts:
            return redirect_to_client(
                redirect_uri,
                provider,
                error="interaction_required",
                error_description="The citizen must change their password.",
                state=state,
            )
        return RedirectResponse(f"/login/password?req={req.id}", status_code=303, headers={"Cache-Control": "no-store"})
    # Never a token with a lower acr than asked for (acr_values treated as essential).
    if account.level < required_level(params):
        await _finish_request(session, req)
        return redirect_to_client(
            redirect_uri, provider, error="unmet_authentication_requirements",
            error_description="This service needs a level-2 e-ID account: register in person at a police office.", state=state,
        )  # fmt: skip
    dependents = await _dependents(session, account)
    if dependents and req.subject_account_id is None and "none" not in prompts:
        return render(request, "subject.html", locale, next_url=here, req=req.id, csrf=req.csrf, dependents=dependents)
    subject_id = req.subject_account_id or account.id
    scope = " ".join(sorted(set(params["scope"].split())))
    consent = await session.scalar(
        select(Consent).where(
            Consent.account_id == subject_id,
            Consent.client_id == client.client_id,
            Consent.scope == scope,
            Consent.kind == ConsentKind.oidc.value,
            Consent.revoked_at.is_(None),
        )
    )
    if consent is None or "consent" in prompts:
        if "none" in prompts:
            return redirect_to_client(
                redirect_uri,
                provider,
                error="consent_required",
                error_description="The citizen has not consented.",
                state=state,
            )
        who = pages.words(locale)["you"]
        if subject_id != account.id:
            who = next((d["full_name"] for d in dependents if d["account_id"] == str(subject_id)), who)
        scopes = [s for s in USER_SCOPES if s in scope.split()]
        return render(
            request,
            "consent.html",
            locale,
            next_url=here,
            req=req.id,
            csrf=req.csrf,
            client_name=client.name,
            who=who,
            scopes=scopes,
            claims={s: [c for c in SCOPE_CLAIMS.get(s, ()) if c != "sub"] for s in scopes},
        )
    return await issue_code(provider, session, req, client, login, account, subject_id, consent.id)


async def _finish_request(session: Any, req: AuthorizationRequest) -> None:
    await session.execute(delete(AuthorizationRequest).where(AuthorizationRequest.id == req.id))
    await session.commit()


async def issue_code(
    provider: Provider,
    session: Any,
    req: AuthorizationRequest,
    client: ClientInfo,
    login: CitizenSession,
    account: Account,
    subject_id: uuid.UUID,
    consent_id: uuid.UUID,
) -> Response:
    now = provider.ctx.clock.now()
    params = req.params
    grant = Grant(
        id=uuid.uuid4(), client_id=client.client_id, account_id=subject_id, actor_account_id=account.id if subject_id != account.id else None,
        scope=" ".join(sorted(set(params["scope"].split()))), acr=ACR_LEVEL[account.level], amr=login.amr, auth_time=login.auth_time,
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
    return redirect_to_client(params["redirect_uri"], provider, code=code, state=params.get("state"))


async def _bound_request(
    request: Request, provider: Provider, session: Any, form: dict[str, str]
) -> tuple[AuthorizationRequest, ClientInfo, CitizenSession] | Response:
    bound = await _signed_in_request(request, provider, session, form.get("req"), provider.ctx.clock.now())
    if isinstance(bound, Response):
        return bound
    req, login = bound
    locale = _locale(request, req)
    if not _csrf_ok(req, form):
        return error_page(request, locale, pages.words(locale)["csrf_failed"], status=403)
    client = await provider.clients.get(req.client_id)
    if client is None or not client.approved:
        return error_page(request, locale, pages.words(locale)["bad_client"])
    return req, client, login


@router.get("/authorize/continue", summary="Where a signed-in flow stands", include_in_schema=False)
async def continue_page(request: Request, req: str = "") -> Response:
    """The page the flow is at (subject choice or consent), shown again: after switching the
    language, or reloading."""
    provider = get_provider(request)
    async with provider.ctx.sessionmaker() as session:
        bound = await _signed_in_request(request, provider, session, req, provider.ctx.clock.now())
        if isinstance(bound, Response):
            return bound
        row, login = bound
        client = await provider.clients.get(row.client_id)
        if client is None or not client.approved:
            locale = _locale(request, row)
            return error_page(request, locale, pages.words(locale)["bad_client"])
        return await continue_flow(request, provider, session, row, client, login)


@router.post("/authorize/subject", summary="Choose whom to act for", include_in_schema=False)
async def subject_submit(request: Request) -> Response:
    provider = get_provider(request)
    form = await read_form(request)
    async with provider.ctx.sessionmaker() as session:
        bound = await _bound_request(request, provider, session, form)
        if isinstance(bound, Response):
            return bound
        req, client, login = bound
        account = await session.get(Account, login.account_id)
        assert account is not None
        choice = form.get("subject", "self")
        if choice == "self":
            req.subject_account_id = account.id
        else:
            allowed = {d["account_id"] for d in await _dependents(session, account)}
            if choice not in allowed:
                locale = _locale(request, req)
                return error_page(request, locale, pages.words(locale)["not_dependent"], status=403)
            req.subject_account_id = uuid.UUID(choice)
        await session.commit()
        return await continue_flow(request, provider, session, req, client, login)


@router.post("/consent", summary="Consent form", include_in_schema=False)
async def consent_submit(request: Request) -> Response:
    provider = get_provider(request)
    form = await read_form(request)
    now = provider.ctx.clock.now()
    async with provider.ctx.sessionmaker() as session:
        bound = await _bound_request(request, provider, session, form)
        if isinstance(bound, Response):
            return bound
        req, client, login = bound
        account = await session.get(Account, login.account_id)
        assert account is not None
        subject_id = req.subject_account_id or account.id
        if form.get("decision") != "allow":
            audit.record(
                session,
                actor=Actor("citizen", str(account.id)),
                action="oidc.consent",
                outcome="denied",
                now=now,
                detail={"client": client.client_id},
            )
            params = req.params
            await _finish_request(session, req)
            return redirect_to_client(
                params["redirect_uri"],
                provider,
                error="access_denied",
                error_description="The citizen denied the request.",
                state=params.get("state"),
            )
        scope = " ".join(sorted(set(req.params["scope"].split())))
        claims = sorted({c for s in scope.split() for c in SCOPE_CLAIMS.get(s, ()) if c != "sub"})
        consent = Consent(
            id=uuid.uuid4(),
            account_id=subject_id,
            client_id=client.client_id,
            kind=ConsentKind.oidc.value,
            scope=scope,
            claims=claims,
            granted_at=now,
        )
        session.add(consent)
        audit.record(
            session,
            actor=Actor("citizen", str(account.id)),
            action="oidc.consent",
            outcome="ok",
            now=now,
            detail={"client": client.client_id, "scope": scope},
        )
        await session.flush()
        return await issue_code(provider, session, req, client, login, account, subject_id, consent.id)
