"""Selective Disclosure for JWTs (SD-JWT, RFC 9901), the part this service uses: flat
disclosures of top-level claims, SHA-256 digests, decoy digests, no key binding.

Compact form (§4): ``<issuer-signed JWT>~<disclosure>~<disclosure>~`` — the trailing ``~``
closes the list; anything after it would be a Key Binding JWT, which we neither issue nor accept.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

import orjson

from app.core.jose import JwtRejected, KeyLookup, verify_jwt

SD_ALG = "sha-256"
RESERVED = frozenset({"_sd", "_sd_alg", "..."})
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")


class SdJwtRejected(Exception):
    """Why an SD-JWT was refused: ``malformed`` (truncated, altered disclosures, not an SD-JWT),
    ``forged`` (signature, key, algorithm, type or issuer), or ``expired``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64url_decode(value: str) -> bytes:
    if not _B64URL.match(value):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def make_disclosure(name: str, value: Any) -> str:
    """§4.2.1: base64url of the JSON array [salt, claim name, claim value]; 128-bit salt."""
    return b64url(orjson.dumps([b64url(secrets.token_bytes(16)), name, value]))


def digest(disclosure: str) -> str:
    """§4.2.3: SHA-256 over the ASCII bytes of the disclosure as it appears in the SD-JWT."""
    return b64url(hashlib.sha256(disclosure.encode("ascii")).digest())


def issuer_payload(claims: dict[str, Any], disclosures: list[str], *, digests: int) -> dict[str, Any]:
    """The payload to sign: plaintext claims, ``_sd`` with one digest per disclosure plus
    decoys (§4.2.5) up to ``digests`` entries so the count reveals nothing, sorted so the order
    reveals nothing either, and ``_sd_alg``."""
    sd = [digest(d) for d in disclosures]
    sd += [b64url(hashlib.sha256(secrets.token_bytes(32)).digest()) for _ in range(max(digests - len(sd), 0))]
    return {**claims, "_sd": sorted(sd), "_sd_alg": SD_ALG}


def serialize(jwt: str, disclosures: list[str]) -> str:
    return jwt + "~" + "".join(d + "~" for d in disclosures)


def split(compact: str) -> tuple[str, list[str]]:
    if not compact.isascii() or "~" not in compact:
        raise SdJwtRejected("malformed", "This is not an SD-JWT (<jwt>~<disclosures>~).")
    jwt, *rest = compact.split("~")
    *disclosures, last = rest
    if last:
        raise SdJwtRejected("malformed", "The SD-JWT does not end with '~': truncated, or with a key binding.")
    if any(not d for d in disclosures):
        raise SdJwtRejected("malformed", "The SD-JWT has an empty disclosure.")
    return jwt, disclosures


def _decode_disclosure(disclosure: str) -> tuple[str, Any]:
    try:
        value = orjson.loads(_b64url_decode(disclosure))
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        raise SdJwtRejected("malformed", "A disclosure is not base64url JSON (truncated?).") from None
    # Array-element disclosures (2 elements) are never issued here.
    if not isinstance(value, list) or len(value) != 3 or not isinstance(value[0], str) or not isinstance(value[1], str):
        raise SdJwtRejected("malformed", "A disclosure is not [salt, name, value].")
    return value[1], value[2]


def disclosed_claims(payload: dict[str, Any], disclosures: list[str]) -> dict[str, Any]:
    """§7.1 step 3-4: every disclosure's digest must be in ``_sd`` (once), claim names must not
    repeat, be reserved or collide with plaintext claims; nested ``_sd`` is not supported."""
    alg = payload.get("_sd_alg", SD_ALG)
    if alg != SD_ALG:
        raise SdJwtRejected("malformed", f"Unsupported _sd_alg {alg!r}.")
    sd = payload.get("_sd", [])
    if not isinstance(sd, list) or not all(isinstance(d, str) for d in sd):
        raise SdJwtRejected("malformed", "_sd is not a list of digests.")
    signed = set(sd)
    seen: set[str] = set()
    disclosed: dict[str, Any] = {}
    for disclosure in disclosures:
        d = digest(disclosure)
        if d not in signed:
            raise SdJwtRejected("malformed", "A disclosure does not match the signed digests (altered or truncated).")
        if d in seen:
            raise SdJwtRejected("malformed", "A disclosure is repeated.")
        seen.add(d)
        name, value = _decode_disclosure(disclosure)
        if name in RESERVED or name in payload or name in disclosed:
            raise SdJwtRejected("malformed", f"The disclosed claim {name!r} is reserved or repeated.")
        if isinstance(value, dict) and "_sd" in value:
            raise SdJwtRejected("malformed", "Nested selective disclosure is not supported.")
        disclosed[name] = value
    return disclosed


@dataclass(frozen=True, slots=True)
class VerifiedSdJwt:
    payload: dict[str, Any]  # the signed claims, without _sd and _sd_alg
    disclosed: dict[str, Any]  # the claims the presented disclosures reveal


async def verify(
    compact: str, key_for: KeyLookup, *, now: dt.datetime, issuer: str, typ: str, max_bytes: int
) -> VerifiedSdJwt:
    """§7.1: the issuer-signed JWT first (strict, app.core.jose.verify_jwt), then the
    disclosures. Audience is left to the caller, which knows who is asking."""
    if len(compact) > max_bytes:
        raise SdJwtRejected("too-large", f"An SD-JWT here is at most {max_bytes} bytes.")
    jwt, disclosures = split(compact)
    try:
        payload = await verify_jwt(
            jwt, key_for, now=now, issuer=issuer, audience=None, typ=typ, require=("exp", "iat", "jti")
        )
    except JwtRejected as exc:
        reason = str(exc)
        if reason == "expired":
            raise SdJwtRejected("expired", "The share has expired.") from None
        if reason == "malformed":
            raise SdJwtRejected("malformed", "The issuer-signed JWT is malformed (truncated?).") from None
        raise SdJwtRejected("forged", f"The issuer-signed JWT does not verify ({reason}).") from None
    disclosed = disclosed_claims(payload, disclosures)
    return VerifiedSdJwt({k: v for k, v in payload.items() if k not in ("_sd", "_sd_alg")}, disclosed)
