"""The pages of the authorization flow: the authorization endpoint (RFC 6749 §3.1), login,
forced password change, choosing whom to act for, and consent. The flow itself (what a
request must hold, what comes next, the code) is app/oidc/authorization.py.

Pages are server-rendered (Jinja2), work without JavaScript, and speak the citizen's language
(app/core/pages.py). Every request is bound to the browser that started it and every form
carries the request's CSRF token; once a citizen has signed in, the request is bound to their
session cookie too.
"""

from __future__ import annotations

import datetime as dt
import hmac
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.accounts import service as accounts
from app.accounts.errors import AccountLocked, LoginFailed, WeakPassword
from app.accounts.models import Account, CitizenSession
from app.clients.service import ClientInfo
from app.core.errors import RateLimited, page_responses
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
from app.core.schemas import is_id_number
from app.oidc import authorization as flow
from app.oidc.endpoints import read_form
from app.oidc.i18n import TEXT
from app.oidc.models import AuthorizationRequest
from app.oidc.provider import Provider, get_provider
from app.oidc.sessions import current_login_session, set_session_cookie

router = APIRouter(tags=["openid-connect"], include_in_schema=True)
pages = Pages(Path(__file__).parent / "templates", TEXT)
render = pages.render
NO_STORE = {"Cache-Control": "no-store"}


def error_page(request: Request, locale: str, message: str, status: int = 400, next_url: str | None = None) -> Response:
    return pages.message(request, locale, message, status=status, next_url=next_url)


def _locale(request: Request, req: AuthorizationRequest | None = None) -> str:
    return page_locale(request, req.params.get("locale") if req is not None else None)


def redirect_to_client(redirect_uri: str, provider: Provider, **params: str | None) -> Response:
    # RFC 9207: the issuer identifies itself in every authorization response.
    query = urlencode({k: v for k, v in {**params, "iss": provider.issuer}.items() if v is not None})
    sep = "&" if "?" in redirect_uri else "?"
    return RedirectResponse(f"{redirect_uri}{sep}{query}", status_code=303, headers=NO_STORE)


def _show(
    request: Request, provider: Provider, req: AuthorizationRequest, client: ClientInfo, step: flow.Step
) -> Response:
    """The page (or redirect) of a step of the flow."""
    if isinstance(step, flow.ToClient):
        return redirect_to_client(step.redirect_uri, provider, **step.params)
    if isinstance(step, flow.ChangePassword):
        return RedirectResponse(f"/login/password?req={req.id}", status_code=303, headers=NO_STORE)
    locale = _locale(request, req)
    here = f"/authorize/continue?req={req.id}"  # where the language switch brings the citizen back
    if isinstance(step, flow.ChooseSubject):
        return render(
            request, "subject.html", locale, next_url=here, req=req.id, csrf=req.csrf, dependents=step.dependents
        )
    return render(
        request, "consent.html", locale, next_url=here, req=req.id, csrf=req.csrf, client_name=client.name,
        who=step.who or pages.words(locale)["you"], scopes=step.scopes, claims=step.claims,
    )  # fmt: skip


_AUTHORIZE = {
    "summary": "Authorization endpoint (code flow, PKCE S256)",
    "response_class": HTMLResponse,
    "responses": page_responses(
        redirects="To the login page, or back to the client with a code or an error (RFC 6749 §4.1.2)"
    ),
}


@router.get("/authorize", operation_id="authorize_get", **_AUTHORIZE)  # type: ignore[arg-type]
@router.post("/authorize", operation_id="authorize_post", **_AUTHORIZE)  # type: ignore[arg-type]
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
    try:
        flow.validate_request(client, params)
    except flow.RedirectableError as exc:
        return redirect_to_client(
            redirect_uri, provider, error=exc.error, error_description=exc.description, state=params.get("state")
        )
    now = provider.ctx.clock.now()
    # The request is bound to this browser (app/core/pages.py): only it can continue the flow.
    device = device_of(request) or new_device()
    req = flow.new_request(
        provider, client, params, locale=started_in, browser=browser_hash(provider.ctx.keyring, device), now=now
    )
    response: Response
    async with provider.ctx.sessionmaker() as session:
        login = await current_login_session(request, provider, session, now)
        if login is not None and flow.can_skip_login(req, login, now):
            req.session_hash = login.token_hash
            session.add(req)
            await session.commit()
            response = _show(
                request, provider, req, client, await flow.next_step(provider, session, req, client, login)
            )
        elif "none" in set(req.params.get("prompt", "").split()):
            return redirect_to_client(
                redirect_uri, provider, error="login_required", error_description="The citizen is not signed in.",
                state=params.get("state"),
            )  # fmt: skip
        else:
            session.add(req)
            await session.commit()
            response = RedirectResponse(f"/login?req={req.id}", status_code=303, headers=NO_STORE)
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
    return _login_form(request, row, client.name if client else "", row.params.get("login_hint", ""))


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
        csrf=req.csrf, client_name=client_name, login_hint=id_number if is_id_number(id_number) else "",
        error=error,
    )  # fmt: skip


@router.post("/login", summary="Login form", include_in_schema=False)
async def login_submit(request: Request) -> Response:
    provider = get_provider(request)
    ctx = provider.ctx
    form = await read_form(request)
    now = ctx.clock.now()
    id_number, password = form.get("id_number", "").strip(), form.get("password", "")
    well_formed = is_id_number(id_number)
    if well_formed:
        # Counted before anything else opens a transaction (app/core/ratelimit.py).
        try:
            await accounts.limit_sign_ins(ctx, id_number, channel="page")
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
            accounts.count_sign_in("page", "malformed")
            return _login_form(request, req, client.name, id_number, pages.words(locale)["login_failed"], 401)
        try:
            account = await accounts.authenticate(
                session, ctx, id_number=id_number, password=password, allow_must_change=True, channel="page"
            )
        except LoginFailed:
            return _login_form(request, req, client.name, id_number, pages.words(locale)["login_failed"], 401)
        except AccountLocked as exc:
            return _login_form(request, req, client.name, id_number, _locked_message(locale, exc), 403)
        browser = browser_hash(ctx.keyring, device_of(request))
        assert browser is not None  # the request's browser binding held
        token, login = await flow.sign_in(provider, session, req, account, browser, now)
        response = _show(request, provider, req, client, await flow.next_step(provider, session, req, client, login))
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
        return _show(request, provider, req, client, await flow.next_step(provider, session, req, client, fresh))


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
        return _show(request, provider, row, client, await flow.next_step(provider, session, row, client, login))


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
        if not await flow.choose_subject(session, req, account, form.get("subject", "self")):
            locale = _locale(request, req)
            return error_page(request, locale, pages.words(locale)["not_dependent"], status=403)
        return _show(request, provider, req, client, await flow.next_step(provider, session, req, client, login))


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
        if form.get("decision") != "allow":
            step = await flow.deny(session, req, client, account, now)
        else:
            step = await flow.consent_and_issue(provider, session, req, client, login, account, now)
        return _show(request, provider, req, client, step)
