"""Signing keys: kept in the database with the private part sealed by the key-encryption key,
loaded once into key objects (parsing a PEM per signature costs ~40 ms, docs/facts.md §5), and
refreshed from the database every few seconds so that every replica sees rotations.

Life of a key: created and published in JWKS at once; signs from ``activates_at`` (the newest
active key of an algorithm signs); leaves JWKS at ``retire_at``, set at rotation to the
successor's activation plus the longest JWT lifetime, so tokens it signed still verify.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import time
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwk, jws
from sqlalchemy import JSON, String, Text, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from app.core.crypto import Sealer
from app.core.db import Base, UTCDateTime

ALGORITHMS = ("RS256", "ES256")


class SigningKey(Base):
    """A signing key pair; the private part is sealed with the key-encryption key.

    Published in JWKS from creation until ``retire_at``; used for signing from ``activates_at``
    (so relying parties have fetched it before it signs anything).
    """

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(String(8))
    private_sealed: Mapped[str] = mapped_column(Text)
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    activates_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    retire_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


@dataclass(frozen=True, slots=True)
class LoadedKey:
    kid: str
    alg: str
    signer: Any  # jose key object with the private key
    verifier: Any  # jose key object with the public key
    public_jwk: dict[str, Any]
    activates_at: dt.datetime
    retire_at: dt.datetime | None


def _b64(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def generate_key(alg: str, now: dt.datetime, activates_at: dt.datetime, sealer: Sealer) -> SigningKey:
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if alg == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        nums = private.public_key().public_numbers()
        public = {"kty": "RSA", "n": _b64(nums.n), "e": _b64(nums.e)}
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
        pn = private.public_key().public_numbers()
        public = {"kty": "EC", "crv": "P-256", "x": _b64_fixed(pn.x), "y": _b64_fixed(pn.y)}
    else:  # pragma: no cover - guarded by callers
        raise ValueError(alg)
    kid = _thumbprint(public)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return SigningKey(
        kid=kid,
        alg=alg,
        private_sealed=sealer.seal(pem, context=f"signing-key:{kid}"),
        public_jwk={**public, "kid": kid, "alg": alg, "use": "sig"},
        created_at=now,
        activates_at=activates_at,
        retire_at=None,
    )


def _b64_fixed(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(32, "big")).decode().rstrip("=")


def _thumbprint(public: dict[str, str]) -> str:
    # RFC 7638 JWK thumbprint: SHA-256 of the required members in lexicographic order.
    members = {k: public[k] for k in (("e", "kty", "n") if public["kty"] == "RSA" else ("crv", "kty", "x", "y"))}
    digest = hashlib.sha256(orjson.dumps(members, option=orjson.OPT_SORT_KEYS)).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class KeyStore:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        sealer: Sealer,
        ttl_seconds: float,
        reader: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        # Reloads read through `reader` (on SQLite a connection that does not take the write
        # lock), since they can happen while a request's own transaction is open.
        self._reader = reader or sessionmaker
        self._sealer = sealer
        self._ttl = ttl_seconds
        self._keys: dict[str, LoadedKey] = {}
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    async def ensure(self, now: dt.datetime) -> None:
        """At start-up: make sure each algorithm has a key that may sign now."""
        async with self._sessionmaker() as session:
            for alg in ALGORITHMS:
                usable = await session.scalar(
                    select(SigningKey.kid).where(
                        SigningKey.alg == alg,
                        SigningKey.activates_at <= now,
                        or_(SigningKey.retire_at.is_(None), SigningKey.retire_at > now),
                    )
                )
                if usable is None:
                    session.add(generate_key(alg, now, now, self._sealer))
            await session.commit()
        await self.reload()

    async def reload(self) -> None:
        async with self._reader() as session:
            rows = (await session.scalars(select(SigningKey))).all()
        keys = {}
        for row in rows:
            known = self._keys.get(row.kid)
            if known is not None:  # key objects are built once per key, not per reload
                keys[row.kid] = LoadedKey(
                    row.kid, row.alg, known.signer, known.verifier, known.public_jwk, row.activates_at, row.retire_at
                )
                continue
            pem = self._sealer.open(row.private_sealed, context=f"signing-key:{row.kid}")
            signer = jwk.construct(pem.decode(), row.alg)
            verifier = jwk.construct({k: v for k, v in row.public_jwk.items() if k not in ("use",)}, row.alg)
            keys[row.kid] = LoadedKey(
                row.kid, row.alg, signer, verifier, row.public_jwk, row.activates_at, row.retire_at
            )
        self._keys = keys
        self._loaded_at = time.monotonic()

    async def _fresh(self) -> dict[str, LoadedKey]:
        if time.monotonic() - self._loaded_at > self._ttl:
            async with self._lock:
                if time.monotonic() - self._loaded_at > self._ttl:
                    await self.reload()
        return self._keys

    async def signing_key(self, alg: str, now: dt.datetime) -> LoadedKey:
        keys = await self._fresh()
        candidates = [
            k
            for k in keys.values()
            if k.alg == alg and k.activates_at <= now and (k.retire_at is None or k.retire_at > now)
        ]
        if not candidates:
            await self.reload()
            candidates = [
                k
                for k in self._keys.values()
                if k.alg == alg and k.activates_at <= now and (k.retire_at is None or k.retire_at > now)
            ]
        if not candidates:
            raise RuntimeError(f"no {alg} signing key is active; run `eid rotate-keys`")
        return max(candidates, key=lambda k: (k.activates_at, k.kid))

    def unready(self, now: dt.datetime) -> list[str]:
        """The algorithms with no loaded key that may sign now (readiness: no database call)."""
        return [
            alg
            for alg in ALGORITHMS
            if not any(
                k.alg == alg and k.activates_at <= now and (k.retire_at is None or k.retire_at > now)
                for k in self._keys.values()
            )
        ]

    async def verification_key(self, kid: str, now: dt.datetime) -> LoadedKey | None:
        keys = await self._fresh()
        key = keys.get(kid)
        if key is None:
            await self.reload()  # a key created by another replica a moment ago
            key = self._keys.get(kid)
        if key is None or (key.retire_at is not None and key.retire_at <= now):
            return None
        return key

    async def jwks(self, now: dt.datetime) -> dict[str, Any]:
        keys = await self._fresh()
        published = [k for k in keys.values() if k.retire_at is None or k.retire_at > now]
        published.sort(key=lambda k: (k.alg, k.activates_at, k.kid))
        return {"keys": [k.public_jwk for k in published]}

    async def sign(self, claims: dict[str, Any], alg: str, now: dt.datetime, typ: str = "JWT") -> str:
        key = await self.signing_key(alg, now)
        token: str = jws.sign(orjson.dumps(claims), key.signer, headers={"kid": key.kid, "typ": typ}, algorithm=alg)
        return token


async def rotate_keys(
    session: AsyncSession, sealer: Sealer, now: dt.datetime, *, lead: dt.timedelta, longest_jwt: dt.timedelta
) -> list[SigningKey]:
    """Add a new key per algorithm, published now, signing after ``lead``; schedule the
    retirement of every older key once the new one has signed for the longest JWT lifetime."""
    activates = now + lead
    await session.execute(
        update(SigningKey)
        .where(or_(SigningKey.retire_at.is_(None), SigningKey.retire_at > activates + longest_jwt))
        .values(retire_at=activates + longest_jwt)
    )
    new = [generate_key(alg, now, activates, sealer) for alg in ALGORITHMS]
    session.add_all(new)
    await session.commit()
    return new
