"""The hot protocol endpoints: token (RFC 6749 §3.2), introspection (RFC 7662), revocation
(RFC 7009), userinfo (OIDC Core §5.3), discovery (OIDC Discovery, RFC 8414) and JWKS.

They take the raw ``Request``, parse the form body themselves and answer prebuilt JSON:
FastAPI's per-parameter machinery costs more than ES256 signing (docs/facts.md §5).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Request
from sqlalchemy import select
from starlette.responses import Response

from app.accounts.models import Account, AccountStatus
from app.clients.service import SERVICE_SCOPES, USER_SCOPES, ClientInfo
from app.core import audit
from app.core.audit import AccessRow, Actor, AuditRow, LegalBasis
from app.core.context import note_caller
from app.core.db import note_revocation
from app.core.errors import OAuthError, invalid_token, oauth_error_responses
from app.core.hotpath import hot
from app.core.jose import JwtRejected
from app.core.metrics import INTROSPECTIONS, TOKENS_ISSUED, Children
from app.documents.service import documents_claim
from app.oidc.bearer import token_is_live, verify_access_token
from app.oidc.claims import ACR_LEVEL, SCOPE_CLAIMS, SUPPORTED_CLAIMS, registry_claims
from app.oidc.client_auth import authenticate_client
from app.oidc.grants import GRANT_TYPES
from app.oidc.grants.base import revoke_grant
from app.oidc.models import Grant, RefreshToken, RevokedAccessToken
from app.oidc.provider import Provider, get_provider
from app.registry.models import Citizen

router = APIRouter(tags=["openid-connect"])

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_ISSUED = Children(TOKENS_ISSUED, *GRANT_TYPES)
_ACTIVE, _INACTIVE = INTROSPECTIONS.labels("active"), INTROSPECTIONS.labels("inactive")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


async def read_form(request: Request) -> dict[str, str]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "Send application/x-www-form-urlencoded.")
    body = await request.body()
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body), max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "Malformed form body.") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:  # RFC 6749 §3.1/§3.2: parameters must not be repeated
            raise OAuthError("invalid_request", f"Parameter {key} is repeated.")
        if "\x00" in value or len(value) > 8192:
            raise OAuthError("invalid_request", f"Parameter {key} is invalid.")
        form[key] = value
    return form


async def _authenticated(request: Request) -> tuple[Provider, dt.datetime, dict[str, str], ClientInfo]:
    """The start of every client-authenticated endpoint: the form, and the client it proves."""
    provider = get_provider(request)
    now = provider.ctx.clock.now()
    form = await read_form(request)
    client = await authenticate_client(provider, form, request.headers.get("authorization"), now=now)
    note_caller(client_id=client.client_id)
    return provider, now, form, client


@router.post(
    "/token",
    summary="Token endpoint (authorization_code, refresh_token, client_credentials)",
    responses=oauth_error_responses(400, 401),
)
@hot()
async def token(request: Request) -> Response:
    provider, now, form, client = await _authenticated(request)
    grant_type = form.get("grant_type")
    if not grant_type:
        raise OAuthError("invalid_request", "grant_type is required.")
    grant = GRANT_TYPES.get(grant_type)
    if grant is None:
        raise OAuthError("unsupported_grant_type", f"{grant_type} is not supported.")
    if grant_type not in client.grant_types:
        raise OAuthError("unauthorized_client", f"This client may not use {grant_type}.")
    answer = await grant.respond(provider, client, form, now)
    _ISSUED[grant_type].inc()
    return json_response(answer, headers=NO_STORE)


@router.post("/introspect", summary="Token introspection (RFC 7662)", responses=oauth_error_responses(400, 401))
@hot()
async def introspect(request: Request) -> Response:
    provider, now, form, client = await _authenticated(request)
    token_value = form.get("token")
    if not token_value:
        raise OAuthError("invalid_request", "token is required.")
    body = await _introspection(provider, client, token_value, now)
    (_ACTIVE if body["active"] else _INACTIVE).inc()
    return json_response(body, headers=NO_STORE)


async def _introspection(provider: Provider, client: ClientInfo, token_value: str, now: dt.datetime) -> dict[str, Any]:
    """The answer of RFC 7662 §2.2 about ``token_value`` for ``client``."""
    inactive = {"active": False}
    if token_value.count(".") == 2:
        try:
            claims = await verify_access_token(provider, token_value, now)
        except JwtRejected:
            return inactive
        # Tokens of other clients only for clients allowed to introspect any (resource servers).
        if claims["client_id"] != client.client_id and not client.can_introspect_any:
            return inactive
        if not await token_is_live(provider, claims):
            return inactive
        body: dict[str, Any] = {
            "active": True,
            "token_type": "Bearer",
            **{k: claims[k] for k in ("scope", "client_id", "sub", "exp", "iat", "iss", "aud", "jti") if k in claims},
        }
        for k in ("acr", "auth_time", "act"):
            if k in claims:
                body[k] = claims[k]
        return body
    async with provider.ctx.sessionmaker() as session:
        row = (await session.execute(
            select(RefreshToken, Grant.revoked_at).join(Grant, Grant.id == RefreshToken.grant_id)
            .where(RefreshToken.token_hash == provider.ctx.keyring.keyed_hash("refresh-token", token_value))
        )).first()  # fmt: skip
    if (
        row is None
        or row.revoked_at is not None
        or row.RefreshToken.used_at is not None
        or row.RefreshToken.expires_at <= now
    ):
        return inactive
    rt: RefreshToken = row.RefreshToken
    if rt.client_id != client.client_id and not client.can_introspect_any:
        return inactive
    return {
        "active": True,
        "token_type": "refresh_token",
        "client_id": rt.client_id,
        "scope": rt.scope,
        "exp": int(rt.expires_at.timestamp()),
    }


@router.post("/revoke", summary="Token revocation (RFC 7009)", responses=oauth_error_responses(400, 401))
async def revoke(request: Request) -> Response:
    provider, now, form, client = await _authenticated(request)
    token_value = form.get("token")
    if not token_value:
        raise OAuthError("invalid_request", "token is required.")
    ok = Response(status_code=200, headers=NO_STORE)
    async with provider.ctx.sessionmaker() as session:
        if token_value.count(".") == 2:
            try:
                claims = await verify_access_token(provider, token_value, now)
            except JwtRejected:
                return ok  # RFC 7009 §2.2: invalid tokens do not cause an error
            if claims["client_id"] != client.client_id:
                return ok
            if await session.get(RevokedAccessToken, claims["jti"]) is None:
                await note_revocation(session)
                session.add(
                    RevokedAccessToken(jti=claims["jti"], expires_at=dt.datetime.fromtimestamp(claims["exp"], dt.UTC))
                )
                audit.record(
                    session,
                    actor=Actor("client", client.client_id),
                    action="oauth.token.revoke",
                    outcome="ok",
                    now=now,
                    target=claims["jti"],
                )
                await session.commit()
            return ok
        rt = await session.get(RefreshToken, provider.ctx.keyring.keyed_hash("refresh-token", token_value))
        if rt is not None and rt.client_id == client.client_id:
            # Revoking a refresh token ends its grant, and with it the access tokens (RFC 7009 §2.1).
            await revoke_grant(session, rt.grant_id, "client_revocation", now, actor=Actor("client", client.client_id))
            await session.commit()
    return ok


def _bearer(request: Request, form: dict[str, str] | None) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    from_form = form.get("access_token") if form else None
    if scheme.lower() == "bearer" and value.strip():
        if from_form:
            raise OAuthError("invalid_request", "Send the token once.")
        return value.strip()
    if from_form:  # RFC 6750 §2.2
        return from_form
    raise OAuthError(
        "invalid_token", "An access token is required.", status=401, headers={"WWW-Authenticate": 'Bearer realm="eid"'}
    )


@router.get(
    "/userinfo",
    summary="UserInfo (OIDC Core §5.3)",
    operation_id="userinfo_get",
    responses=oauth_error_responses(400, 401, 403),
)
@router.post(
    "/userinfo",
    summary="UserInfo (OIDC Core §5.3)",
    operation_id="userinfo_post",
    responses=oauth_error_responses(400, 401, 403),
)
@hot()
async def userinfo(request: Request) -> Response:
    provider = get_provider(request)
    now = provider.ctx.clock.now()
    form = await read_form(request) if request.method == "POST" and request.headers.get("content-type") else None
    token_value = _bearer(request, form)
    try:
        claims = await verify_access_token(provider, token_value, now)
    except JwtRejected:
        raise invalid_token() from None
    gid = claims.get("gid")
    if gid is None or "openid" not in claims.get("scope", "").split():
        raise OAuthError(
            "insufficient_scope",
            "The token does not carry the openid scope.",
            status=403,
            headers={"WWW-Authenticate": 'Bearer realm="eid", error="insufficient_scope", scope="openid"'},
        )
    try:
        grant_id = uuid.UUID(str(gid))
    except ValueError:
        raise invalid_token() from None
    client = await provider.clients.get(claims["client_id"])
    async with provider.ctx.sessionmaker() as session:
        # One round trip: grant, account, registry record and the token's revocation.
        row = (await session.execute(
            select(Grant, Account, Citizen, RevokedAccessToken.jti.label("revoked"))
            .join(Account, Account.id == Grant.account_id).join(Citizen, Citizen.id_number == Account.id_number)
            .outerjoin(RevokedAccessToken, RevokedAccessToken.jti == claims["jti"])
            .where(Grant.id == grant_id)
        )).first()  # fmt: skip
        revoked = row.revoked if row is not None else None
        if (
            row is None
            or client is None
            or revoked is not None
            or row.Grant.revoked_at is not None
            or row.Account.status != AccountStatus.active
        ):
            raise invalid_token()
        account, citizen = row.Account, row.Citizen
        scopes = set(claims["scope"].split())
        body = {"sub": claims["sub"]}
        body |= registry_claims(
            scopes, full_name=citizen.full_name, date_of_birth=citizen.date_of_birth, sex=citizen.sex, residence=citizen.residence,
            updated_at=citizen.updated_at, phone=account.phone, email=account.email, id_number=citizen.id_number,
            national_id_allowed="national_id" in client.scopes,
        )  # fmt: skip
        if "documents" in scopes:
            body["documents"] = await documents_claim(session, citizen.id_number, provider.ctx.clock.today())
        if "act" in claims:
            body["act"] = claims["act"]
        audit_row = AuditRow(
            now, "client", client.client_id, "oidc.userinfo", citizen.id_number, "ok",
            {"claims": sorted(k for k in body if k != "sub")},
        )  # fmt: skip
        released = [s for s in scopes if s != "openid" and any(c in body for c in SCOPE_CLAIMS.get(s, ()))]
        access_row = (
            AccessRow(
                citizen.id_number, now, "client", client.client_id, client.name, "userinfo", released,
                LegalBasis.consent.value, row.Grant.consent_id,
            ) if released else None
        )  # fmt: skip
    # Answered once its rows are durable (on PostgreSQL, in one commit with concurrent calls').
    await provider.ctx.journal.write(audit_row, access_row)
    return json_response(body, headers=NO_STORE)


def discovery_document(provider: Provider) -> dict[str, Any]:
    iss = provider.issuer
    return {
        "issuer": iss,
        "authorization_endpoint": f"{iss}/authorize",
        "token_endpoint": f"{iss}/token",
        "userinfo_endpoint": f"{iss}/userinfo",
        "jwks_uri": f"{iss}/jwks",
        "introspection_endpoint": f"{iss}/introspect",
        "revocation_endpoint": f"{iss}/revoke",
        "end_session_endpoint": f"{iss}/logout",
        "scopes_supported": list(USER_SCOPES) + list(SERVICE_SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
            "none",
        ],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "ES256"],
        "introspection_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
        ],
        "revocation_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
            "none",
        ],
        # RFC 8414 §2: required when a JWT-based method is listed for the endpoint.
        "introspection_endpoint_auth_signing_alg_values_supported": ["RS256", "ES256"],
        "revocation_endpoint_auth_signing_alg_values_supported": ["RS256", "ES256"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": SUPPORTED_CLAIMS,
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "acr_values_supported": list(ACR_LEVEL.values()),
        "prompt_values_supported": ["none", "login", "consent"],
        "ui_locales_supported": ["vi", "en"],
        "claim_types_supported": ["normal"],
        "authorization_response_iss_parameter_supported": True,
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "frontchannel_logout_supported": False,
        "scope_claims": {k: list(v) for k, v in SCOPE_CLAIMS.items()},
    }


@router.get("/.well-known/openid-configuration", summary="OpenID Provider metadata")
@hot()
async def openid_configuration(request: Request) -> Response:
    return json_response(discovery_document(get_provider(request)), headers={"Cache-Control": "public, max-age=300"})


@router.get("/.well-known/oauth-authorization-server", summary="OAuth 2.0 authorization server metadata (RFC 8414)")
async def oauth_metadata(request: Request) -> Response:
    return json_response(discovery_document(get_provider(request)), headers={"Cache-Control": "public, max-age=300"})


@router.get("/jwks", summary="Public signing keys (JWK Set)")
@hot()
async def jwks(request: Request) -> Response:
    provider = get_provider(request)
    return json_response(
        await provider.keys.jwks(provider.ctx.clock.now()), headers={"Cache-Control": "public, max-age=300"}
    )
