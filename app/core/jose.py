"""JWTs this provider signs (ID tokens, RFC 9068 access tokens, logout tokens) and the one
strict verification routine for every JWT it accepts (its own tokens, client assertions).

Verification refuses (RFC 8725 JWT BCP): ``alg`` other than the key's own (so no ``none`` and
no HS256 signed with a public key), an unknown ``kid``, key-carrying headers (``jku``, ``x5u``,
``jwk``, ``x5c``) and ``crit``, a wrong ``typ``, ``iss`` or ``aud``, and expired tokens.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from jose import jws
from jose.exceptions import JOSEError

ALLOWED_ALGS = frozenset({"RS256", "ES256"})
FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "crit"})
MAX_JWT_BYTES = 16 * 1024


class JwtRejected(Exception):
    """Why a JWT was refused (for logs and error descriptions; never includes the token)."""


def _b64json(segment: str) -> dict[str, Any]:
    try:
        padded = segment + "=" * (-len(segment) % 4)
        value = orjson.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeEncodeError, orjson.JSONDecodeError):
        raise JwtRejected("malformed") from None
    if not isinstance(value, dict):
        raise JwtRejected("malformed")
    return value


def unverified_header(token: str) -> dict[str, Any]:
    if len(token) > MAX_JWT_BYTES or token.count(".") != 2:
        raise JwtRejected("malformed")
    return _b64json(token.split(".", 1)[0])


def unverified_claims(token: str) -> dict[str, Any]:
    unverified_header(token)
    return _b64json(token.split(".")[1])


KeyLookup = Callable[[str | None, str], Awaitable[Any | None]]


async def verify_jwt(
    token: str,
    key_for: KeyLookup,
    *,
    now: dt.datetime,
    issuer: str | None,
    audience: str | tuple[str, ...] | None,
    typ: str | None = None,
    leeway: int = 0,
    require: tuple[str, ...] = ("exp", "iat"),
) -> dict[str, Any]:
    """Verify signature and claims; ``key_for(kid, alg)`` returns the key object or None."""
    header = unverified_header(token)
    alg = header.get("alg")
    if alg not in ALLOWED_ALGS:
        raise JwtRejected("unsupported alg")
    if FORBIDDEN_HEADERS & set(header):
        raise JwtRejected("forbidden header")
    if typ is not None and str(header.get("typ", "")).lower() not in (typ.lower(), "application/" + typ.lower()):
        raise JwtRejected("wrong typ")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise JwtRejected("bad kid")
    key = await key_for(kid, alg)
    if key is None:
        raise JwtRejected("unknown key")
    try:
        payload = jws.verify(token, key, algorithms=[alg])
    except (JOSEError, ValueError, TypeError):
        raise JwtRejected("bad signature") from None
    try:
        claims = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise JwtRejected("malformed claims") from None
    if not isinstance(claims, dict):
        raise JwtRejected("malformed claims")
    for name in require:
        if name not in claims:
            raise JwtRejected(f"missing {name}")
    ts = now.timestamp()
    exp = claims.get("exp")
    if exp is not None and (not isinstance(exp, int | float) or exp + leeway <= ts):
        raise JwtRejected("expired")
    nbf = claims.get("nbf")
    if nbf is not None and (not isinstance(nbf, int | float) or nbf - leeway > ts):
        raise JwtRejected("not yet valid")
    iat = claims.get("iat")
    if iat is not None and (not isinstance(iat, int | float) or iat - leeway - 60 > ts):
        raise JwtRejected("issued in the future")
    if issuer is not None and claims.get("iss") != issuer:
        raise JwtRejected("wrong issuer")
    if audience is not None:
        wanted = (audience,) if isinstance(audience, str) else audience
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(a in wanted for a in auds):
            raise JwtRejected("wrong audience")
    return claims


def new_jti() -> str:
    return uuid.uuid4().hex


def epoch(t: dt.datetime) -> int:
    return int(t.timestamp())
