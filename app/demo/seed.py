"""Load a fixtures file into a fresh demo database: registry, accounts, clients, documents,
and the published demo signing keys (so tokens are reproducible between runs)."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from importlib import resources

from jose import jwk
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account
from app.accounts.service import current_account
from app.admin.models import StaffMember
from app.admin.service import create_staff
from app.clients.models import Client
from app.clients.service import create_client
from app.core import audit
from app.core.audit import SYSTEM, Actor
from app.core.deps import AppContext
from app.core.keys import SigningKey, _thumbprint
from app.core.schemas import normalise_phone
from app.demo.fixtures import Fixtures
from app.documents.models import DocumentIssuerType, IntegratedDocument
from app.registry.models import Citizen
from app.registry.schemas import CitizenIn, GuardianIn
from app.registry.service import write_citizen

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


async def seed_fixtures(
    session: AsyncSession, ctx: AppContext, fixtures: Fixtures, *, demo_keys: bool = True
) -> list[str]:
    """Load the fixtures; what is already there (by ID number, client_id, username, document)
    is left as it is, so that loading twice changes nothing. ``demo_keys``: the fixed demo
    signing keys (demo mode), else the service makes its own. Returns lines to print."""
    now = ctx.clock.now()
    if demo_keys:
        for alg in ("RS256", "ES256"):
            key = _demo_signing_key(alg, ctx)
            if await session.get(SigningKey, key.kid) is None:
                session.add(key)
    by_key = {c.key: c.id_number for c in fixtures.citizens}
    actor = Actor("system", "demo")
    # Guardians first: a record's guardian links name records of this file.
    for c in sorted(fixtures.citizens, key=lambda c: bool(c.guardians)):
        if await session.get(Citizen, c.id_number) is not None:
            continue
        record = CitizenIn(
            id_number=c.id_number, full_name=c.full_name, date_of_birth=c.date_of_birth, sex=c.sex, residence=c.residence,
            phone=c.phone, guardians=[GuardianIn(id_number=by_key.get(g, g)) for g in c.guardians],
        )  # fmt: skip
        await write_citizen(session, record, actor=actor, now=now)
    await session.flush()
    accounts: dict[str, Account] = {}
    for c in fixtures.citizens:
        if c.account is None:
            continue
        existing = await current_account(session, c.id_number)
        if existing is not None:
            accounts[c.id_number] = existing
            continue
        a = c.account
        accounts[c.id_number] = Account(
            id=uuid.uuid5(uuid.NAMESPACE_URL, f"eid-demo:{c.id_number}"),  # stable between runs
            id_number=c.id_number, status=a.status, level=a.level, phone=normalise_phone(c.phone) if c.phone else None,
            email=a.email, password_hash=await ctx.hasher.hash(a.password) if a.password else None,
            must_change_password=a.must_change_password, failed_logins=0, created_at=now, updated_at=now,
        )  # fmt: skip
        # Guardians first, so that dependents can point at them.
        if not c.guardians:
            session.add(accounts[c.id_number])
    await session.flush()
    for c in fixtures.citizens:
        account = accounts.get(c.id_number)
        if account is None or not c.guardians or account in session:
            continue
        guardian = next((accounts[by_key.get(g, g)] for g in c.guardians if by_key.get(g, g) in accounts), None)
        if account.password_hash is None and guardian is not None:
            account.guardian_account_id = guardian.id
        session.add(account)
    await session.flush()
    for cl in fixtures.clients:
        if await session.get(Client, cl.client_id) is not None:
            continue
        await create_client(
            session, ctx.keyring, name=cl.name, kind=cl.kind, redirect_uris=cl.redirect_uris, grant_types=list(cl.grant_types),
            scopes=cl.scopes, auth_method=cl.auth_method, id_token_alg=cl.id_token_alg,
            post_logout_redirect_uris=cl.post_logout_redirect_uris, jwks=cl.jwks, backchannel_logout_uri=cl.backchannel_logout_uri,
            can_introspect_any=cl.can_introspect_any, approved=True, client_id=cl.client_id, secret=cl.secret,
            actor=actor, now=now,
        )  # fmt: skip
    await seed_documents(session, ctx, fixtures, now)
    audit.record(
        session, actor=SYSTEM, action="demo.seed", outcome="ok", now=now,
        detail={"citizens": len(fixtures.citizens), "clients": len(fixtures.clients)},
    )  # fmt: skip
    await session.commit()
    for member in fixtures.staff:
        if await session.scalar(select(StaffMember.id).where(StaffMember.username == member.username)) is None:
            await create_staff(
                session, ctx, username=member.username, display_name=member.display_name, password=member.password,
                scopes=list(member.scopes),
            )  # fmt: skip
    return _summary(fixtures)


def _summary(fixtures: Fixtures) -> list[str]:
    lines = []
    for c in fixtures.citizens:
        if c.account is not None and c.account.password and c.account.status == "active":
            lines.append(
                f"citizen {c.key} (level {c.account.level}): ID number {c.id_number}  password {c.account.password}"
            )
    lines += [f"officer: username {m.username}  password {m.password}  (POST /staff/token)" for m in fixtures.staff]
    lines += [f"client {cl.client_id} ({cl.kind}): secret {cl.secret}" for cl in fixtures.clients if cl.secret]
    return lines


async def seed_documents(session: AsyncSession, ctx: AppContext, fixtures: Fixtures, now: dt.datetime) -> None:
    """Integrated documents of the fixtures, issued by the named (or first) agency client,
    which is also allowed to issue every document type, as an administrator would grant."""
    agencies = [c.client_id for c in fixtures.clients if c.kind == "agency"]
    for agency in agencies:
        for doc_type in ("driving_licence", "vehicle_registration", "health_insurance", "social_insurance"):
            if await session.get(DocumentIssuerType, (agency, doc_type)) is None:
                session.add(DocumentIssuerType(client_id=agency, doc_type=doc_type, granted_at=now, granted_by="demo"))
    for c in fixtures.citizens:
        for d in c.documents:
            issuer = d.issuer or (agencies[0] if agencies else None)
            if issuer is None:
                raise ValueError("fixtures with documents need an agency client")
            if await session.get(
                IntegratedDocument, uuid.uuid5(uuid.NAMESPACE_URL, f"eid-demo-doc:{d.type}:{d.number}")
            ):
                continue
            session.add(
                IntegratedDocument(
                    id=uuid.uuid5(uuid.NAMESPACE_URL, f"eid-demo-doc:{d.type}:{d.number}"), doc_type=d.type,
                    number=d.number.upper(), holder_id_number=c.id_number, category=d.category, issued_on=d.issued_on,
                    expires_on=d.expires_on, issuer_client_id=issuer, status=d.status, created_at=now, updated_at=now,
                )
            )  # fmt: skip
