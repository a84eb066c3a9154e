"""Client authentication at the token, introspection and revocation endpoints:
``client_secret_basic`` and ``client_secret_post`` (RFC 6749 §2.3.1), ``private_key_jwt``
(OIDC Core §9, RFC 7523 §3 with jti replay protection) and ``none`` for public clients."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Any
from urllib.parse import unquote_plus

from jose import jwk
from jose.exceptions import JOSEError
from sqlalchemy.exc import IntegrityError

from app.clients.service import ClientInfo, hash_secret
from app.core.crypto import constant_time_equals
from app.core.errors import OAuthError, invalid_client
from app.core.jose import JwtRejected, verify_jwt
from app.oidc.models import UsedAssertion
from app.oidc.provider import Provider

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME = dt.timedelta(minutes=10)


def _basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise invalid_client("Malformed Basic credentials.") from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise invalid_client("Malformed Basic credentials.")
    # RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
    return unquote_plus(client_id), unquote_plus(secret)


async def authenticate_client(
    provider: Provider, form: dict[str, str], authorization: str | None, *, now: dt.datetime
) -> ClientInfo:
    basic = _basic_credentials(authorization)
    posted_secret = form.get("client_secret")
    assertion = form.get("client_assertion")
    used = [m for m, present in (("basic", basic), ("post", posted_secret), ("jwt", assertion)) if present]
    if len(used) > 1:
        raise OAuthError("invalid_request", "Use exactly one client authentication method.")

    if basic is not None:
        client_id, secret = basic
        if form.get("client_id") not in (None, client_id):
            raise OAuthError("invalid_request", "client_id differs from the Basic credentials.")
        client = await _known(provider, client_id, scheme="Basic")
        return _check_secret(provider, client, secret, "client_secret_basic")
    if posted_secret is not None:
        client = await _known(provider, form.get("client_id"), scheme="Basic")
        return _check_secret(provider, client, posted_secret, "client_secret_post")
    if assertion is not None:
        if form.get("client_assertion_type") != JWT_BEARER:
            raise invalid_client("client_assertion_type must be " + JWT_BEARER)
        return await _check_assertion(provider, assertion, form.get("client_id"), now)
    client = await _known(provider, form.get("client_id"), scheme="Basic")
    if not client.is_public:
        raise invalid_client("This client must authenticate.")
    return client


async def _known(provider: Provider, client_id: str | None, *, scheme: str) -> ClientInfo:
    if not client_id:
        raise invalid_client("No client credentials were sent.", scheme)
    if len(client_id) > 64 or "\x00" in client_id:
        raise invalid_client("Unknown client.", scheme)
    client = await provider.clients.get(client_id)
    if client is None:
        raise invalid_client("Unknown client.", scheme)
    if not client.approved:
        raise invalid_client("This client is not approved to connect.", scheme)
    return client


def _check_secret(provider: Provider, client: ClientInfo, secret: str, method: str) -> ClientInfo:
    expected = client.secret_hash
    # Always compute the hash, so that a wrong method and a wrong secret take as long.
    given = hash_secret(provider.ctx.keyring, client.client_id, secret)
    if client.auth_method != method or expected is None or not constant_time_equals(expected, given):
        raise invalid_client("Client authentication failed.")
    return client


async def _check_assertion(provider: Provider, assertion: str, claimed_id: str | None, now: dt.datetime) -> ClientInfo:
    try:
        from app.core.jose import unverified_claims

        unverified = unverified_claims(assertion)
    except JwtRejected:
        raise invalid_client("Malformed client assertion.") from None
    client_id = unverified.get("iss")
    if not isinstance(client_id, str) or (claimed_id is not None and claimed_id != client_id):
        raise invalid_client("The assertion's issuer is not the client.")
    client = await _known(provider, client_id, scheme="Basic")
    if client.auth_method != "private_key_jwt":
        raise invalid_client("This client does not use private_key_jwt.")
    jwks = client.jwks or (await provider.client_jwks(client.jwks_uri) if client.jwks_uri else {"keys": []})

    async def key_for(kid: str | None, alg: str) -> Any | None:
        keys = [
            k
            for k in jwks.get("keys", [])
            if isinstance(k, dict) and k.get("alg", alg) == alg and k.get("use", "sig") == "sig"
        ]
        if kid is not None:
            keys = [k for k in keys if k.get("kid") == kid]
        if len(keys) != 1:
            return None
        try:
            return jwk.construct(keys[0], alg)
        except (JOSEError, ValueError, TypeError):
            return None

    try:
        claims = await verify_jwt(
            assertion, key_for, now=now, issuer=client_id,
            audience=(provider.url("/token"), provider.url("/introspect"), provider.url("/revoke"), provider.issuer), require=("exp", "jti", "sub", "aud"), leeway=30,
        )  # fmt: skip
    except JwtRejected as exc:
        raise invalid_client(f"Client assertion rejected: {exc}.") from None
    if claims.get("sub") != client_id:
        raise invalid_client("The assertion's subject is not the client.")
    exp = dt.datetime.fromtimestamp(claims["exp"], dt.UTC)
    if exp - now > MAX_ASSERTION_LIFETIME:
        raise invalid_client("The client assertion lives too long (at most 10 minutes).")
    jti = claims["jti"]
    if not isinstance(jti, str) or not 1 <= len(jti) <= 255 or "\x00" in jti:
        raise invalid_client("The client assertion needs a jti.")
    # RFC 7523 §3 item 7: a jti is used once; the primary key settles races between replicas.
    async with provider.ctx.sessionmaker() as session:
        session.add(UsedAssertion(client_id=client_id, jti=jti, expires_at=exp))
        try:
            await session.commit()
        except IntegrityError:
            raise invalid_client("The client assertion was already used.") from None
    return client
