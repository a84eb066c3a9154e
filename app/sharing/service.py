"""QR shares: a citizen (or a guardian for a dependent) chooses attributes, the service signs
them as an SD-JWT with only those disclosures, and a verifier checks it offline or redeems it
online once. Every online redemption is written to the citizen's access log under the share's
consent; revoking the share (or its consent) stops redemption at once."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account, AccountStatus, OfficerRegistration, OfficerRegistrationStatus
from app.consent.models import Consent, ConsentKind
from app.core import audit
from app.core.audit import Actor, LegalBasis, disclose
from app.core.crypto import random_token
from app.core.errors import Problem
from app.core.jose import KeyLookup, epoch
from app.core.principal import Principal
from app.documents.service import (
    acting_for,
    disclosed_document,
    holder_document,
    require_presentable,
)
from app.oidc.provider import Provider
from app.registry.models import Citizen
from app.registry.service import age_on
from app.sharing import qr, sdjwt
from app.sharing.errors import (
    ShareAudienceMismatch,
    ShareAudienceUnknown,
    ShareEmpty,
    ShareExpired,
    ShareForged,
    ShareMalformed,
    ShareNotFound,
    ShareRedeemed,
    ShareRevoked,
    ShareTooLarge,
    ShareUnknown,
)
from app.sharing.models import Share
from app.sharing.schemas import RedeemedShare, ShareCreated, ShareIn, ShareOut, ShareState
from app.sharing.verifier import (
    MAX_SHARE_BYTES,
    REFERENCE_PREFIX,
    SHARE_TYP,
    SHARE_VCT,
    ShareRejected,
    VerifiedShare,
    verify_share_token,
)

# Every share's _sd holds this many digests (real ones, then decoys): one per attribute a share
# can carry, so the count tells a verifier nothing about what was left out.
DIGESTS = 8
_SHARE_ID = re.compile(r"^[A-Za-z0-9_-]{16,32}$")

_REJECTIONS: dict[str, type[Problem]] = {
    "too-large": ShareTooLarge,
    "malformed": ShareMalformed,
    "reference": ShareMalformed,
    "forged": ShareForged,
    "expired": ShareExpired,
}


def attribute_values(chosen: list[str], *, citizen: Citizen, photo_ref: str | None, today: dt.date) -> dict[str, Any]:
    """The disclosed value of each chosen attribute; age predicates tell the threshold and
    nothing else about the birth date."""
    available: dict[str, Any] = {
        "name": citizen.full_name,
        "birthdate": citizen.date_of_birth.isoformat(),
        "gender": citizen.sex,
        "address": {"formatted": citizen.residence, "country": "VN"},  # as OIDC Core §5.1.1
        "age_over_18": age_on(citizen.date_of_birth, today) >= 18,
        "age_over_14": age_on(citizen.date_of_birth, today) >= 14,
    }
    if photo_ref is not None:
        available["photo_ref"] = photo_ref
    return {name: available[name] for name in chosen if name in available}


async def _photo_ref(session: AsyncSession, id_number: str) -> str | None:
    """The face-template reference of the citizen's approved chip-card application, if any."""
    application = await session.scalar(
        select(OfficerRegistration.card_application)
        .where(
            OfficerRegistration.id_number == id_number,
            OfficerRegistration.status == OfficerRegistrationStatus.approved.value,
            OfficerRegistration.card_application.is_not(None),
        )
        .order_by(OfficerRegistration.updated_at.desc())
        .limit(1)
    )
    ref = (application or {}).get("biometrics", {}).get("face_template_id")
    return ref if isinstance(ref, str) else None


def _service_keys(provider: Provider, now: dt.datetime) -> KeyLookup:
    async def key_for(kid: str | None, alg: str) -> Any | None:
        key = await provider.keys.verification_key(kid, now) if kid else None
        return key.verifier if key is not None and key.alg == alg else None

    return key_for


def _seal_context(share_id: str) -> str:
    return f"share:{share_id}"


def _signed_token(provider: Provider, share: Share) -> str:
    return provider.ctx.keyring.sealer.open(share.token_sealed, context=_seal_context(share.id)).decode("ascii")


def qr_payload(provider: Provider, share: Share) -> str:
    return REFERENCE_PREFIX + share.id if share.form == "reference" else _signed_token(provider, share)


async def create_share(session: AsyncSession, provider: Provider, account: Account, body: ShareIn) -> ShareCreated:
    ctx = provider.ctx
    now, today = ctx.clock.now(), ctx.clock.today()
    subject = await acting_for(session, account, body.for_account)
    citizen = await session.get(Citizen, subject.id_number)
    assert citizen is not None  # accounts.id_number references citizens
    if body.audience is not None:
        client = await provider.clients.get(body.audience)
        if client is None or not client.approved:
            raise ShareAudienceUnknown("Name an approved client, or no audience for any verifier.")
    chosen: list[str] = list(body.attributes)
    photo = await _photo_ref(session, subject.id_number) if "photo_ref" in chosen else None
    values = attribute_values(chosen, citizen=citizen, photo_ref=photo, today=today)
    document_id = None
    if body.document_id is not None:
        doc = await holder_document(session, subject, body.document_id)
        require_presentable(doc, today)
        issuer = await provider.clients.get(doc.issuer_client_id)
        values["document"] = disclosed_document(doc, issuer.name if issuer else None)
        document_id = doc.id
    omitted = [name for name in chosen if name not in values]
    if not values:
        raise ShareEmpty("Nothing chosen is available to share.", omitted=omitted)

    share_id = random_token(16)
    expires_at = now + dt.timedelta(seconds=body.lifetime_seconds)
    claims: dict[str, Any] = {
        "iss": provider.issuer,
        "iat": epoch(now),
        "exp": epoch(expires_at),
        "jti": share_id,
        "vct": SHARE_VCT,
    }
    if body.audience is not None:
        claims["aud"] = body.audience
    disclosures = [sdjwt.make_disclosure(name, value) for name, value in values.items()]
    jwt = await provider.keys.sign(
        sdjwt.issuer_payload(claims, disclosures, digests=DIGESTS), "ES256", now, typ=SHARE_TYP
    )
    compact = sdjwt.serialize(jwt, disclosures)
    form = "sd-jwt" if qr.fits_inline(compact) else "reference"

    consent = Consent(
        id=uuid.uuid4(), account_id=subject.id, client_id=body.audience, kind=ConsentKind.share.value,
        scope="share", claims=sorted(values), purpose=body.purpose, granted_at=now,
    )  # fmt: skip
    session.add(consent)
    await session.flush()  # the consent first: the share references it
    share = Share(
        id=share_id, account_id=subject.id, created_by=account.id, consent_id=consent.id,
        audience_client_id=body.audience, attributes=sorted(values), document_id=document_id, form=form,
        token_sealed=ctx.keyring.sealer.seal(compact.encode("ascii"), context=_seal_context(share_id)),
        created_at=now, expires_at=expires_at,
    )  # fmt: skip
    session.add(share)
    audit.record(
        session, actor=Actor("citizen", str(account.id)), action="share.create", outcome="ok", now=now,
        target_id_number=subject.id_number,
        detail={"share": share_id, "attributes": sorted(values), "audience": body.audience, "form": form,
                "acting_for": str(subject.id) if subject.id != account.id else None},
    )  # fmt: skip
    await session.commit()
    return ShareCreated(
        id=share_id, form=form, qr_payload=qr_payload(provider, share), sd_jwt=compact, attributes=sorted(values),
        omitted=omitted, audience=body.audience, consent_id=consent.id, created_at=now, expires_at=expires_at,
        qr_png=f"/sharing/{share_id}/qr.png", qr_svg=f"/sharing/{share_id}/qr.svg",
    )  # fmt: skip


def share_status(share: Share, consent_revoked: bool, now: dt.datetime) -> ShareState:
    if share.revoked_at is not None or consent_revoked:
        return "revoked"
    if share.redeemed_at is not None:
        return "redeemed"
    if share.expires_at <= now:
        return "expired"
    return "active"


async def my_shares(session: AsyncSession, account: Account, now: dt.datetime) -> list[ShareOut]:
    rows = await session.execute(
        select(Share, Consent.revoked_at.label("consent_revoked_at"))
        .join(Consent, Consent.id == Share.consent_id)
        .where(Share.created_by == account.id)
        .order_by(Share.created_at.desc())
        .limit(100)
    )
    return [
        ShareOut(
            id=s.id,
            for_account_id=s.account_id,
            attributes=s.attributes,
            audience=s.audience_client_id,
            form=s.form,
            status=share_status(s, revoked is not None, now),
            created_at=s.created_at,
            expires_at=s.expires_at,
            redeemed_at=s.redeemed_at,
            redeemed_by=s.redeemed_by,
            consent_id=s.consent_id,
        )
        for s, revoked in rows.all()
    ]


async def _own_share(session: AsyncSession, account: Account, share_id: str) -> tuple[Share, Consent]:
    share = await session.get(Share, share_id) if _SHARE_ID.match(share_id) else None
    if share is None or share.created_by != account.id:
        raise ShareNotFound()
    consent = await session.get(Consent, share.consent_id)
    assert consent is not None  # shares.consent_id references consents
    return share, consent


async def revoke_share(session: AsyncSession, account: Account, share_id: str, now: dt.datetime) -> None:
    """Revokes the share and its consent: no redemption after this, whoever holds the QR."""
    share, consent = await _own_share(session, account, share_id)
    if share.revoked_at is not None:
        raise ShareNotFound("This share is already revoked.")
    share.revoked_at = now
    if consent.revoked_at is None:
        consent.revoked_at = now
    subject = await session.get(Account, share.account_id)
    audit.record(
        session, actor=Actor("citizen", str(account.id)), action="share.revoke", outcome="ok", now=now,
        target_id_number=subject.id_number if subject else None, detail={"share": share.id},
    )  # fmt: skip
    await session.commit()


async def share_qr(
    session: AsyncSession, provider: Provider, account: Account, share_id: str, kind: qr.ImageKind
) -> bytes:
    """Only the share's owner gets its QR: for an inline share the image *is* the data."""
    share, consent = await _own_share(session, account, share_id)
    status = share_status(share, consent.revoked_at is not None, provider.ctx.clock.now())
    if status == "revoked":
        raise ShareRevoked()
    if status == "redeemed":
        raise ShareRedeemed()
    if status == "expired":
        raise ShareExpired()
    return qr.render(qr_payload(provider, share), kind)


# --- verifiers --------------------------------------------------------------------------------


async def _refuse(
    session: AsyncSession, verifier: Principal, share: Share, outcome: str, problem: Problem, now: dt.datetime
) -> Problem:
    """A refused redemption of a known share is recorded (in its own transaction), nothing else."""
    share_id, account_id = share.id, share.account_id  # read before the rollback expires them
    await session.rollback()
    subject = await session.get(Account, account_id)
    audit.record(
        session, actor=verifier.actor, action="share.redeem", outcome=outcome, now=now,
        target_id_number=subject.id_number if subject else None, detail={"share": share_id},
    )  # fmt: skip
    await session.commit()
    return problem


async def redeem(session: AsyncSession, provider: Provider, verifier: Principal, token: str) -> RedeemedShare:
    now = provider.ctx.clock.now()
    token = token.strip()
    if len(token) > MAX_SHARE_BYTES:
        raise ShareTooLarge(f"A share is at most {MAX_SHARE_BYTES} bytes.")
    share: Share | None = None
    if token.startswith(REFERENCE_PREFIX):
        reference = token[len(REFERENCE_PREFIX) :]
        if not _SHARE_ID.match(reference):
            raise ShareMalformed("A reference is eidshare:<id>.")
        share = await session.get(Share, reference)
        # Only reference shares are redeemed by reference: an inline share's ID (its jti) must
        # not fetch more than the disclosures its holder showed.
        if share is None or share.form != "reference":
            raise ShareUnknown()
        compact = _signed_token(provider, share)
    else:
        compact = token
    try:
        verified = await verify_share_token(compact, _service_keys(provider, now), now=now, issuer=provider.issuer)
    except ShareRejected as exc:
        problem = _REJECTIONS[exc.reason](exc.detail)
        if share is not None:
            raise await _refuse(session, verifier, share, exc.reason, problem, now) from None
        raise problem from None
    if share is None:
        share = await session.get(Share, verified.share_id)
        if share is None:
            raise ShareUnknown()
    elif share.id != verified.share_id:  # pragma: no cover - a sealed token is the share's own
        raise ShareUnknown()
    return await _honour(session, provider, verifier, share, verified, now)


async def _honour(
    session: AsyncSession,
    provider: Provider,
    verifier: Principal,
    share: Share,
    verified: VerifiedShare,
    now: dt.datetime,
) -> RedeemedShare:
    consent = await session.get(Consent, share.consent_id)
    subject = await session.get(Account, share.account_id)
    if share.revoked_at is not None or consent is None or consent.revoked_at is not None:
        raise await _refuse(session, verifier, share, "revoked", ShareRevoked(), now)
    if subject is None or subject.status != AccountStatus.active:
        raise await _refuse(
            session, verifier, share, "account_inactive", ShareRevoked("The account is not active."), now
        )
    if share.expires_at <= now:
        raise await _refuse(session, verifier, share, "expired", ShareExpired(), now)
    if share.audience_client_id is not None and share.audience_client_id != verifier.id:
        raise await _refuse(session, verifier, share, "audience_mismatch", ShareAudienceMismatch(), now)
    # One-time: of two concurrent redemptions only one sets redeemed_at.
    claimed = await session.execute(
        update(Share)
        .where(Share.id == share.id, Share.redeemed_at.is_(None))
        .values(redeemed_at=now, redeemed_by=verifier.id)
        .returning(Share.id)
    )
    if claimed.first() is None:
        raise await _refuse(session, verifier, share, "already_redeemed", ShareRedeemed(), now)
    categories = sorted(verified.claims)
    disclose(
        session, id_number=subject.id_number, recipient_type="client", recipient_id=verifier.id,
        recipient_name=verifier.name, channel="qr", categories=categories, legal_basis=LegalBasis.consent,
        consent_id=consent.id, now=now,
    )  # fmt: skip
    audit.record(
        session, actor=verifier.actor, action="share.redeem", outcome="ok", now=now,
        target_id_number=subject.id_number, detail={"share": share.id, "disclosed": categories},
    )  # fmt: skip
    await session.commit()
    return RedeemedShare(
        share_id=share.id,
        claims=verified.claims,
        issued_at=verified.issued_at,
        expires_at=verified.expires_at,
        audience=verified.audience,
    )
