"""Identity semantics: subjects, assurance levels and the claims each scope releases.

Claims come from the population registry record, so portals can pre-fill their forms.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from app.core.crypto import Keyring

ACR_LEVEL = {1: "urn:eid:loa:1", 2: "urn:eid:loa:2"}
LEVEL_OF_ACR = {v: k for k, v in ACR_LEVEL.items()}

# OIDC Core §5.4 standard scopes, plus this provider's national_id and documents.
SCOPE_CLAIMS: dict[str, tuple[str, ...]] = {
    "openid": ("sub",),
    "profile": ("name", "family_name", "middle_name", "given_name", "birthdate", "gender", "updated_at"),
    "phone": ("phone_number", "phone_number_verified"),
    "email": ("email", "email_verified"),
    "address": ("address",),
    "national_id": ("national_id",),
    "documents": ("documents",),
}
SUPPORTED_CLAIMS = sorted(
    {c for claims in SCOPE_CLAIMS.values() for c in claims}
    | {"acr", "amr", "auth_time", "sid", "act", "iss", "aud", "exp", "iat", "nonce", "azp"}
)


def pairwise_sub(keyring: Keyring, sector_identifier: str, account_id: str) -> str:
    """OIDC Core §8.1 pairwise subject: stable per sector, unlinkable across sectors."""
    digest = bytes.fromhex(keyring.keyed_hash("pairwise-sub", sector_identifier, account_id))
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def split_vietnamese_name(full_name: str) -> tuple[str, str, str]:
    """(family, middle, given): the family name comes first, the given name last."""
    parts = full_name.split()
    if len(parts) == 1:
        return "", "", parts[0]
    return parts[0], " ".join(parts[1:-1]), parts[-1]


def registry_claims(
    scopes: set[str],
    *,
    full_name: str,
    date_of_birth: dt.date,
    sex: str,
    residence: str,
    updated_at: dt.datetime,
    phone: str | None,
    email: str | None,
    id_number: str,
    national_id_allowed: bool,
) -> dict[str, Any]:
    claims: dict[str, Any] = {}
    if "profile" in scopes:
        family, middle, given = split_vietnamese_name(full_name)
        claims |= {
            "name": full_name,
            "family_name": family,
            "given_name": given,
            "birthdate": date_of_birth.isoformat(),
            "gender": sex,
            "updated_at": int(updated_at.timestamp()),
        }
        if middle:
            claims["middle_name"] = middle
    if "phone" in scopes and phone:
        claims |= {"phone_number": phone, "phone_number_verified": True}
    if "email" in scopes and email:
        # Level-2 emails were given in person but never proven by a link: not verified.
        claims |= {"email": email, "email_verified": False}
    if "address" in scopes:
        claims["address"] = {"formatted": residence, "country": "VN"}
    if "national_id" in scopes and national_id_allowed:
        claims["national_id"] = id_number
    return claims
