"""Verifying a QR share offline, as a verifier's own system does it (and the tests do).

Steps (RFC 9901 §7.1, with this service's profile):
1. Fetch the service's JWK Set from ``<issuer>/jwks`` (cache it; keys rotate with overlap).
2. Split the scanned text at ``~``: the issuer-signed JWT, then the disclosures; the text must
   end with ``~`` (no key binding is used).
3. Verify the JWT: header ``typ`` is ``vc+sd-jwt``, ``alg`` ES256 and ``kid`` a key of the set;
   the signature verifies; ``iss`` is the service; ``exp`` has not passed (shares live at most
   10 minutes).
4. If the JWT has ``aud``, it must be the verifier's own client ID.
5. Hash each disclosure (SHA-256 over its base64url text, base64url-encoded); each digest must
   appear in ``_sd`` once. Decode it: ``[salt, name, value]``; ``name`` is the disclosed claim.
6. Use only the disclosed claims: ``name``, ``birthdate``, ``gender``, ``address``,
   ``photo_ref``, ``age_over_18``, ``age_over_14``, ``document``.

A text ``eidshare:<id>`` carries no data: redeem it online (``POST /sharing/redeem``).
Offline verification cannot see a revocation or a previous use; redeem online where that matters.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.core.jose import KeyLookup
from app.documents.presentation import key_lookup_from_jwks
from app.sharing import sdjwt

SHARE_TYP = "vc+sd-jwt"
SHARE_VCT = "urn:eid:vct:share:1"
REFERENCE_PREFIX = "eidshare:"
MAX_SHARE_BYTES = 8192  # a share the service issues is under 4 KiB


class ShareRejected(Exception):
    """Why a share was refused offline: too-large, malformed, forged, expired, audience or reference."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class VerifiedShare:
    share_id: str
    issued_at: dt.datetime
    expires_at: dt.datetime
    audience: str | None
    claims: dict[str, Any]  # the disclosed claims only


async def verify_share_token(compact: str, key_for: KeyLookup, *, now: dt.datetime, issuer: str) -> VerifiedShare:
    """Steps 2, 3 and 5 with any key lookup (the service uses its key store, verifiers their
    JWKS); the audience (step 4) is left to the caller."""
    if compact.startswith(REFERENCE_PREFIX):
        raise ShareRejected("reference", "A reference carries no data: redeem it online.")
    try:
        verified = await sdjwt.verify(
            compact, key_for, now=now, issuer=issuer, typ=SHARE_TYP, max_bytes=MAX_SHARE_BYTES
        )
    except sdjwt.SdJwtRejected as exc:
        raise ShareRejected(exc.reason, exc.detail) from None
    payload = verified.payload
    aud = payload.get("aud")
    if payload.get("vct") != SHARE_VCT or not isinstance(payload.get("jti"), str) or not isinstance(aud, str | None):
        raise ShareRejected("malformed", "This SD-JWT is not a share of this service.")
    return VerifiedShare(
        share_id=payload["jti"],
        issued_at=dt.datetime.fromtimestamp(payload["iat"], dt.UTC),
        expires_at=dt.datetime.fromtimestamp(payload["exp"], dt.UTC),
        audience=aud,
        claims=verified.disclosed,
    )


async def verify_share_offline(
    compact: str, jwks: Mapping[str, Any], *, now: dt.datetime, issuer: str, audience: str | None = None
) -> VerifiedShare:
    """The whole offline check with a fetched JWK Set (steps 1-5); ``audience`` is the
    verifier's client ID, if it has one."""
    share = await verify_share_token(compact, key_lookup_from_jwks(jwks), now=now, issuer=issuer)
    if share.audience is not None and share.audience != audience:
        raise ShareRejected("audience", "The share is for another verifier.")
    return share
