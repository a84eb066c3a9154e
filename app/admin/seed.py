"""The small demo registry and accounts that `make run` loads (idempotent)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Account, AccountStatus
from app.admin.models import StaffMember
from app.admin.service import create_staff
from app.core import audit
from app.core.audit import SYSTEM
from app.core.deps import AppContext
from app.core.principal import STAFF_SCOPES
from app.registry.idnumber import Sex, make_id_number
from app.registry.models import Citizen, GuardianLink

DEMO_PASSWORD = "demo-eid-citizen-2026"
DEMO_OFFICER = "officer.demo"
DEMO_OFFICER_PASSWORD = "demo-eid-officer-2026"


@dataclass(frozen=True)
class DemoCitizen:
    name: str
    dob: dt.date
    sex: Sex
    province: str
    serial: int
    residence: str
    phone: str | None
    level: int | None  # None: registry record only, no account
    guardian_of: tuple[int, ...] = ()

    @property
    def id_number(self) -> str:
        return make_id_number(self.province, self.sex, self.dob, self.serial)


DEMO_CITIZENS = [
    DemoCitizen(
        "Nguyễn Văn An",
        dt.date(1990, 5, 17),
        Sex.male,
        "001",
        123456,
        "12 Phố Huế, Hai Bà Trưng, Hà Nội",
        "+84912345678",
        1,
    ),
    DemoCitizen(
        "Trần Thị Bích Ngọc",
        dt.date(1985, 11, 2),
        Sex.female,
        "079",
        234567,
        "45 Lê Lợi, Quận 1, TP. Hồ Chí Minh",
        "+84987654321",
        2,
        (2,),
    ),
    DemoCitizen(
        "Trần Minh Khôi", dt.date(2016, 3, 9), Sex.male, "079", 345678, "45 Lê Lợi, Quận 1, TP. Hồ Chí Minh", None, None
    ),
    DemoCitizen(
        "Lê Hoàng Nam",
        dt.date(2001, 8, 30),
        Sex.male,
        "048",
        456789,
        "8 Bạch Đằng, Hải Châu, Đà Nẵng",
        "+84356789012",
        None,
    ),
    DemoCitizen(
        "Phạm Thu Hà",
        dt.date(1978, 1, 25),
        Sex.female,
        "031",
        567890,
        "20 Lạch Tray, Ngô Quyền, Hải Phòng",
        "+84773456789",
        None,
    ),
    DemoCitizen(
        "Võ Thị Mai", dt.date(2012, 12, 12), Sex.female, "092", 678901, "3 Hòa Bình, Ninh Kiều, Cần Thơ", None, None
    ),
]


async def seed_demo(session: AsyncSession, ctx: AppContext) -> list[str]:
    """Load the demo data unless present; returns lines to print."""
    now = ctx.clock.now()
    added = 0
    for c in DEMO_CITIZENS:
        if await session.get(Citizen, c.id_number) is None:
            session.add(
                Citizen(
                    id_number=c.id_number,
                    full_name=c.name,
                    date_of_birth=c.dob,
                    sex=c.sex.value,
                    birth_province=c.province,
                    residence=c.residence,
                    phone=c.phone,
                    created_at=now,
                    updated_at=now,
                )
            )
            added += 1
    await session.flush()
    for c in DEMO_CITIZENS:
        for ward_index in c.guardian_of:
            ward = DEMO_CITIZENS[ward_index].id_number
            if await session.get(GuardianLink, (ward, c.id_number)) is None:
                session.add(GuardianLink(ward_id_number=ward, guardian_id_number=c.id_number, relation="parent"))
    await session.flush()
    password_hash = await ctx.hasher.hash(DEMO_PASSWORD)
    for c in DEMO_CITIZENS:
        if c.level is None or await session.scalar(select(Account.id).where(Account.id_number == c.id_number)):
            continue
        account = Account(
            id=uuid.uuid4(),
            id_number=c.id_number,
            status=AccountStatus.active.value,
            level=c.level,
            phone=c.phone,
            password_hash=password_hash,
            must_change_password=False,
            failed_logins=0,
            created_at=now,
            updated_at=now,
            password_changed_at=now,
        )
        session.add(account)
        await session.flush()
        for ward_index in c.guardian_of:
            minor = DEMO_CITIZENS[ward_index]
            if not await session.scalar(select(Account.id).where(Account.id_number == minor.id_number)):
                session.add(
                    Account(
                        id=uuid.uuid4(),
                        id_number=minor.id_number,
                        status=AccountStatus.active.value,
                        level=c.level,
                        guardian_account_id=account.id,
                        must_change_password=False,
                        failed_logins=0,
                        created_at=now,
                        updated_at=now,
                    )
                )
    if added:
        audit.record(session, actor=SYSTEM, action="demo.seed", outcome="ok", now=now, detail={"citizens": added})
    await session.commit()
    if not await session.scalar(select(StaffMember.id).where(StaffMember.username == DEMO_OFFICER)):
        await create_staff(
            session,
            ctx,
            username=DEMO_OFFICER,
            display_name="Demo officer",
            password=DEMO_OFFICER_PASSWORD,
            scopes=sorted(STAFF_SCOPES),
        )
    first, second = DEMO_CITIZENS[0], DEMO_CITIZENS[1]
    return [
        f"demo citizen (level 1): ID number {first.id_number}  password {DEMO_PASSWORD}",
        f"demo citizen (level 2, guardian of {DEMO_CITIZENS[2].id_number}): ID number {second.id_number}  password {DEMO_PASSWORD}",
        f"demo officer: username {DEMO_OFFICER}  password {DEMO_OFFICER_PASSWORD}  (POST /staff/token)",
    ]
