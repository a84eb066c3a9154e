"""Load a fixtures file into a fresh demo database: registry, accounts, clients, documents,
and the published demo signing keys (so tokens are reproducible between runs)."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from importlib import resources

from jose import jwk
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.clients.service import create_client
from app.core import audit
from app.core.audit import SYSTEM, Actor
from app.core.deps import AppContext
from app.core.keys import SigningKey, _thumbprint
from app.core.schemas import normalise_phone
from app.demo.fixtures import Fixtures
from app.documents.models import DocumentIssuerType, IntegratedDocument
from app.registry.models import Citizen, GuardianLink

# Fixed so that pairwise subjects and keyed hashes are the same on every demo run.
DEMO_SECRET = base64.urlsafe_b64encode(b"eid-demo-mode-only-not-a-secret!").decode()
_EPOCH = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)


def demo_key_pem(alg: str) -> str:
    text = resources.files("app.demo").joinpath(f"data/demo-{alg.lower()}.pem").read_text("ascii")
    return text[text.index("-----BEGIN") :]


def _demo_signing_key(alg: str, ctx: AppContext) -> SigningKey:
    pem = demo_key_pem(alg)
    public = jwk.construct(pem, alg).public_key().to_dict()
    public = {k: v for k, v in public.items() if k in ("kty", "n", "e", "crv", "x", "y")}
    kid = "demo-" + _thumbprint(public)[:16]
    return SigningKey(
        kid=kid, alg=alg, private_sealed=ctx.keyring.sealer.seal(pem.encode(), context=f"signing-key:{kid}"),
        public_jwk={**public, "kid": kid, "alg": alg, "use": "sig"}, created_at=_EPOCH, activates_at=_EPOCH, retire_at=None,
    )  # fmt: skip


async def seed_fixtures(session: AsyncSession, ctx: AppContext, fixtures: Fixtures) -> None:
    now = ctx.clock.now()
    for alg in ("RS256", "ES256"):
        session.add(_demo_signing_key(alg, ctx))
    by_key: dict[str, str] = {}
    for c in fixtures.citizens:
        by_key[c.key] = c.id_number
        session.add(
            Citizen(
                id_number=c.id_number, full_name=c.full_name, date_of_birth=c.date_of_birth, sex=c.sex.value,
                birth_province=c.id_number[:3], residence=c.residence, phone=normalise_phone(c.phone) if c.phone else None,
                created_at=now, updated_at=now,
            )
        )  # fmt: skip
    await session.flush()
    for c in fixtures.citizens:
        for g in c.guardians:
            session.add(
                GuardianLink(ward_id_number=c.id_number, guardian_id_number=by_key.get(g, g), relation="parent")
            )
    accounts: dict[str, Account] = {}
    for c in fixtures.citizens:
        if c.account is None:
            continue
        a = c.account
        accounts[c.id_number] = Account(
            id=uuid.uuid5(uuid.NAMESPACE_URL, f"eid-demo:{c.id_number}"),  # stable between runs
            id_number=c.id_number, status=a.status, level=a.level, phone=normalise_phone(c.phone) if c.phone else None,
            email=a.email, password_hash=await ctx.hasher.hash(a.password) if a.password else None,
            must_change_password=a.must_change_password, failed_logins=0, created_at=now, updated_at=now,
        )  # fmt: skip
    # Guardians first, so that dependents can point at them.
    for c in fixtures.citizens:
        if c.id_number in accounts and not c.guardians:
            session.add(accounts[c.id_number])
    await session.flush()
    for c in fixtures.citizens:
        if c.id_number in accounts and c.guardians:
            account = accounts[c.id_number]
            guardian = next((accounts[by_key.get(g, g)] for g in c.guardians if by_key.get(g, g) in accounts), None)
            if account.password_hash is None and guardian is not None:
                account.guardian_account_id = guardian.id
            session.add(account)
    await session.flush()
    for cl in fixtures.clients:
        await create_client(
            session, ctx.keyring, name=cl.name, kind=cl.kind, redirect_uris=cl.redirect_uris, grant_types=list(cl.grant_types),
            scopes=cl.scopes, auth_method=cl.auth_method, id_token_alg=cl.id_token_alg,
            post_logout_redirect_uris=cl.post_logout_redirect_uris, jwks=cl.jwks, backchannel_logout_uri=cl.backchannel_logout_uri,
            can_introspect_any=cl.can_introspect_any, approved=True, client_id=cl.client_id, secret=cl.secret,
            actor=Actor("system", "demo"), now=now,
        )  # fmt: skip
    await seed_documents(session, ctx, fixtures, now)
    audit.record(
        session,
        actor=SYSTEM,
        action="demo.seed",
        outcome="ok",
        now=now,
        detail={"citizens": len(fixtures.citizens), "clients": len(fixtures.clients)},
    )
    await session.commit()


async def seed_documents(session: AsyncSession, ctx: AppContext, fixtures: Fixtures, now: dt.datetime) -> None:
    """Integrated documents of the fixtures, issued by the named (or first) agency client,
    which is also allowed to issue every document type, as an administrator would grant."""
    agencies = [c.client_id for c in fixtures.clients if c.kind == "agency"]
    for agency in agencies:
        for doc_type in ("driving_licence", "vehicle_registration", "health_insurance", "social_insurance"):
            session.add(DocumentIssuerType(client_id=agency, doc_type=doc_type, granted_at=now, granted_by="demo"))
    for c in fixtures.citizens:
        for d in c.documents:
            issuer = d.issuer or (agencies[0] if agencies else None)
            if issuer is None:
                raise ValueError("fixtures with documents need an agency client")
            session.add(
                IntegratedDocument(
                    id=uuid.uuid5(uuid.NAMESPACE_URL, f"eid-demo-doc:{d.type}:{d.number}"), doc_type=d.type,
                    number=d.number.upper(), holder_id_number=c.id_number, category=d.category, issued_on=d.issued_on,
                    expires_on=d.expires_on, issuer_client_id=issuer, status=d.status, created_at=now, updated_at=now,
                )
            )  # fmt: skip
