"""The population registry: the authoritative citizen records accounts are checked against."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import audit
from app.core.audit import Actor, LegalBasis, disclose
from app.core.errors import InvalidInput, NotFound, Problem
from app.core.privacy import mask_id_number
from app.registry.idnumber import PROVINCES, RULE_MESSAGES, IdRule, Sex
from app.registry.models import Citizen, GuardianLink
from app.registry.rules import RowError, validate_record
from app.registry.schemas import CitizenIn, CitizenOut, GuardianOut


class InvalidIdNumber(Problem):
    """Shown to officers only: public endpoints never say which rule failed."""

    status, slug, title = 422, "invalid-id-number", "The ID number does not fit the record"

    def __init__(self, rules: list[IdRule]) -> None:
        super().__init__(
            " ".join(RULE_MESSAGES[r] for r in rules),
            rules=[{"rule": r.value, "message": RULE_MESSAGES[r]} for r in rules],
        )


class CitizenNotFound(NotFound):
    slug, title = "citizen-not-found", "No registry record has this ID number"


def check_record(record: CitizenIn, today: dt.date) -> None:
    """The registry's rules (app/registry/rules.py, the importer's too), on a record the API took."""
    values = record.model_dump(mode="json")
    try:
        validate_record(values, today)
    except RowError as exc:
        if exc.rules:
            raise InvalidIdNumber(exc.rules) from None
        raise InvalidInput(str(exc), errors=[{"field": exc.field, "message": str(exc)}]) from None


async def _unknown_guardians(session: AsyncSession, record: CitizenIn) -> list[str]:
    """A guardian must be in the registry (as in a bulk import, where it may also come from the file)."""
    wanted = {g.id_number for g in record.guardians}
    if not wanted:
        return []
    found = set((await session.scalars(select(Citizen.id_number).where(Citizen.id_number.in_(wanted)))).all())
    return sorted(wanted - found)


async def upsert_citizen(
    session: AsyncSession, record: CitizenIn, *, actor: Actor, now: dt.datetime
) -> tuple[CitizenOut, bool]:
    """Create or correct one record, in its own transaction; returns (the record as written,
    created). The answer is read before the commit, so that nothing can fail after it: a
    failure answers "nothing was changed" only when that is true."""
    citizen, created = await write_citizen(session, record, actor=actor, now=now)
    await session.flush()
    written = await describe_citizen(session, citizen)
    await session.commit()
    return written, created


async def write_citizen(
    session: AsyncSession, record: CitizenIn, *, actor: Actor, now: dt.datetime
) -> tuple[Citizen, bool]:
    """Create or correct one record in the caller's transaction (audited): the one way a single
    record is written (the API, the demo seed). The bulk importer writes the same columns in
    batches (app/registry/importer.py), and validates rows by the same rules."""
    check_record(record, (now + dt.timedelta(hours=7)).date())  # Vietnam's date (app/core/clock.py)
    unknown = await _unknown_guardians(session, record)
    if unknown:
        message = f"guardians: {', '.join(mask_id_number(g) for g in unknown)} not in the registry"
        raise InvalidInput(message, errors=[{"field": "guardians", "message": "not in the registry"}])
    citizen = await session.get(Citizen, record.id_number)
    created = citizen is None
    if citizen is None:
        citizen = Citizen(id_number=record.id_number, created_at=now)
        session.add(citizen)
    citizen.full_name = record.full_name
    citizen.date_of_birth = record.date_of_birth
    citizen.sex = record.sex.value
    citizen.birth_province = record.id_number[:3]
    citizen.residence = record.residence
    citizen.phone = record.phone
    citizen.updated_at = now
    await session.flush()
    await session.execute(delete(GuardianLink).where(GuardianLink.ward_id_number == record.id_number))
    for g in record.guardians:
        session.add(GuardianLink(ward_id_number=record.id_number, guardian_id_number=g.id_number, relation=g.relation))
    audit.record(
        session,
        actor=actor,
        action="registry.create" if created else "registry.update",
        outcome="ok",
        now=now,
        target_id_number=record.id_number,
    )
    return citizen, created


async def get_citizen(session: AsyncSession, id_number: str) -> Citizen | None:
    return await session.get(Citizen, id_number)


async def guardians_of(session: AsyncSession, id_number: str) -> list[GuardianLink]:
    return list((await session.scalars(select(GuardianLink).where(GuardianLink.ward_id_number == id_number))).all())


async def wards_of(session: AsyncSession, id_number: str) -> list[GuardianLink]:
    return list((await session.scalars(select(GuardianLink).where(GuardianLink.guardian_id_number == id_number))).all())


async def read_citizen(session: AsyncSession, id_number: str, *, actor: Actor, now: dt.datetime) -> CitizenOut:
    """An officer's read of a full record: audited, since it discloses personal data."""
    citizen = await get_citizen(session, id_number)
    audit.record(
        session,
        actor=actor,
        action="registry.read",
        outcome="ok" if citizen else "not_found",
        now=now,
        target_id_number=id_number,
    )
    if citizen is None:
        await session.commit()
        raise CitizenNotFound()
    disclose(
        session, id_number=id_number, recipient_type="officer", recipient_id=actor.id, recipient_name=None,
        channel="registry", categories=["registry_record"], legal_basis=LegalBasis.law, consent_id=None, now=now,
    )  # fmt: skip
    record = await describe_citizen(session, citizen)  # before the commit: nothing can fail after it
    await session.commit()
    return record


async def describe_citizen(session: AsyncSession, citizen: Citizen) -> CitizenOut:
    guardians = await guardians_of(session, citizen.id_number)
    wards = await wards_of(session, citizen.id_number)
    return CitizenOut(
        id_number=citizen.id_number,
        full_name=citizen.full_name,
        date_of_birth=citizen.date_of_birth,
        sex=Sex(citizen.sex),
        birth_province=citizen.birth_province,
        birth_province_name=PROVINCES.get(citizen.birth_province, ""),
        residence=citizen.residence,
        phone=citizen.phone,
        guardians=[GuardianOut(id_number=g.guardian_id_number, relation=g.relation) for g in guardians],
        wards=[GuardianOut(id_number=w.ward_id_number, relation=w.relation) for w in wards],
        created_at=citizen.created_at,
        updated_at=citizen.updated_at,
    )


def age_on(date_of_birth: dt.date, day: dt.date) -> int:
    """Completed years on ``day`` (a 29 February birthday counts from 1 March in other years)."""
    years = day.year - date_of_birth.year
    if (day.month, day.day) < (date_of_birth.month, date_of_birth.day):
        years -= 1
    return years
