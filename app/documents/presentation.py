"""Document presentations: a short-lived ES256 JWS that a verifier (a traffic police officer, a
hospital desk) checks offline with the service's JWKS, shown in place of the paper document.

Verifying one offline (``verify_presentation`` with ``key_lookup_from_jwks`` does exactly this):
1. the header's ``typ`` is ``document+jwt`` and ``alg`` is ES256 (RFC 8725 §3.11: explicit
   typing, so an access or ID token is never taken for a presentation);
2. the signature verifies with the JWKS key named by ``kid``;
3. ``iss`` is the service's issuer and ``exp`` has not passed (presentations live 3 minutes);
4. ``document.status`` was ``valid`` when signed; for the status now, ask
   ``GET /documents/status`` online.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from jose import jwk

from app.core.jose import JwtRejected, KeyLookup, epoch, new_jti, verify_jwt

PRESENTATION_TYP = "document+jwt"
PRESENTATION_TTL = dt.timedelta(minutes=3)
MAX_PRESENTATION_BYTES = 4096  # a presentation we sign is under 1.5 KiB


class PresentationRejected(Exception):
    """Why a presentation was refused: ``too-large``, ``malformed``, ``expired`` or ``forged``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def presentation_claims(
    *,
    issuer: str,
    now: dt.datetime,
    document: Mapping[str, Any],
    holder_name: str,
    holder_birthdate: dt.date,
) -> dict[str, Any]:
    return {
        "iss": issuer,
        "iat": epoch(now),
        "exp": epoch(now + PRESENTATION_TTL),
        "jti": new_jti(),
        "document": dict(document),
        "holder": {"name": holder_name, "birthdate": holder_birthdate.isoformat()},
    }


def key_lookup_from_jwks(jwks: Mapping[str, Any]) -> KeyLookup:
    """A verifier's key lookup from a fetched JWK Set: the key named by ``kid``, for its own
    algorithm only."""
    keys = {k.get("kid"): k for k in jwks.get("keys", []) if isinstance(k, dict)}

    async def key_for(kid: str | None, alg: str) -> Any | None:
        key = keys.get(kid) if kid else None
        if key is None or key.get("alg") != alg:
            return None
        return jwk.construct({k: v for k, v in key.items() if k != "use"}, alg)

    return key_for


async def verify_presentation(token: str, key_for: KeyLookup, *, now: dt.datetime, issuer: str) -> dict[str, Any]:
    if len(token) > MAX_PRESENTATION_BYTES:
        raise PresentationRejected("too-large")
    try:
        claims = await verify_jwt(
            token, key_for, now=now, issuer=issuer, audience=None, typ=PRESENTATION_TYP, require=("exp", "iat", "jti")
        )
    except JwtRejected as exc:
        reason = str(exc)
        raise PresentationRejected(
            "expired" if reason == "expired" else "malformed" if reason == "malformed" else "forged"
        ) from None
    if not isinstance(claims.get("document"), dict) or not isinstance(claims.get("holder"), dict):
        raise PresentationRejected("malformed")
    return claims
