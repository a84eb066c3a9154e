"""Helpers the tests share: synthetic citizens, the SMS outbox, and the running test app."""

from __future__ import annotations

import datetime as dt
import itertools
import random
import re
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI

from app.core.deps import AppContext
from app.core.sms import read_outbox
from app.core.subscribers import FakeSubscriberCheck
from app.oidc.provider import Provider
from app.registry.idnumber import PROVINCES, Sex, make_id_number

_serials = itertools.count(random.randint(0, 400_000))
_phones = itertools.count(random.randint(0, 10_000_000))
PROVINCE_CODES = sorted(PROVINCES)


def get_provider_of(ctx: AppContext) -> Provider:
    provider = ctx.extension(Provider)
    assert provider is not None
    return provider


def new_phone() -> str:
    return f"+8491{next(_phones) % 10_000_000:07d}"


def years_ago(today: dt.date, years: int, days: int = 0) -> dt.date:
    try:
        d = today.replace(year=today.year - years)
    except ValueError:  # 29 February
        d = today.replace(year=today.year - years, day=28)
    return d - dt.timedelta(days=days)


@dataclass
class Harness:
    app: FastAPI
    client: httpx.AsyncClient
    admin_token: str
    backend: str

    @property
    def ctx(self) -> AppContext:
        ctx: AppContext = self.app.state.ctx
        return ctx

    @property
    def provider(self) -> Provider:
        return get_provider_of(self.ctx)

    @property
    def subscribers(self) -> FakeSubscriberCheck:
        fake = self.ctx.subscribers
        assert isinstance(fake, FakeSubscriberCheck)
        return fake

    def browser(self) -> httpx.AsyncClient:
        """A separate client with its own cookie jar (one citizen's browser)."""
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://testserver")

    async def relogin(self) -> None:
        """A fresh admin token (after moving the clock past the staff session's lifetime)."""
        resp = await self.client.post(
            "/staff/token", json={"username": "admin.test", "password": "test admin password 1"}
        )
        assert resp.status_code == 200, resp.text
        self.admin_token = resp.json()["access_token"]

    def staff(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.admin_token}"}

    async def citizen(
        self,
        *,
        full_name: str = "Nguyễn Văn Thử",
        age: int = 30,
        sex: Sex = Sex.male,
        date_of_birth: dt.date | None = None,
        phone: str | None = "auto",
        guardians: list[str] | None = None,
        province: str | None = None,
    ) -> dict[str, Any]:
        """A new registry record with a unique, valid ID number, created through the API."""
        dob = date_of_birth or years_ago(self.ctx.clock.today(), age, days=10)
        id_number = make_id_number(province or random.choice(PROVINCE_CODES), sex, dob, next(_serials))
        body = {
            "id_number": id_number,
            "full_name": full_name,
            "date_of_birth": dob.isoformat(),
            "sex": sex.value,
            "residence": "1 Tràng Tiền, Hoàn Kiếm, Hà Nội",
            "phone": new_phone() if phone == "auto" else phone,
            "guardians": [{"id_number": g, "relation": "parent"} for g in guardians or []],
        }
        resp = await self.client.put("/registry/citizens", json=body, headers=self.staff())
        assert resp.status_code == 201, resp.text
        return body

    async def outbox(self, phone: str) -> list[dict[str, str]]:
        async with self.ctx.sessionmaker() as session:
            return await read_outbox(session, self.ctx.keyring, phone=phone)

    async def last_otp(self, phone: str) -> str:
        """The newest one-time code sent to the phone."""
        messages = [m for m in await self.outbox(phone) if m["purpose"].endswith("_otp")]
        assert messages, f"no code sent to {phone}"
        match = re.search(r"\b(\d{6})\b", messages[0]["text"])
        assert match, messages[0]["text"]
        return match.group(1)

    async def last_password(self, phone: str) -> str:
        """The newest initial password sent to the phone."""
        messages = [m for m in await self.outbox(phone) if m["purpose"] == "initial_password"]
        assert messages, f"no initial password sent to {phone}"
        match = re.search(r"Mật khẩu tạm thời: (\S+)", messages[0]["text"])
        assert match, messages[0]["text"]
        return match.group(1)

    async def notices(self, phone: str) -> list[str]:
        """The security notifications sent to the phone by SMS, newest first."""
        return [
            m["purpose"].removeprefix("notice_") for m in await self.outbox(phone) if m["purpose"].startswith("notice_")
        ]

    async def count(self, table: str, where: str = "1=1", **params: Any) -> int:
        from sqlalchemy import text

        async with self.ctx.sessionmaker() as session:
            value = await session.scalar(text(f"SELECT count(*) FROM {table} WHERE {where}"), params)
            return int(value or 0)

    async def register_level1(self, citizen: dict[str, Any], new_password: str = "a long passphrase for tests") -> str:
        """Self-register a citizen and set their own password; returns the password."""
        resp = await self.client.post(
            "/accounts/registrations",
            json={k: citizen[k] for k in ("id_number", "full_name", "date_of_birth", "phone")},
        )
        assert resp.status_code == 202, resp.text
        code = await self.last_otp(citizen["phone"])
        resp = await self.client.post(f"/accounts/registrations/{resp.json()['id']}/verify", json={"code": code})
        assert resp.status_code == 200, resp.text
        initial = await self.last_password(citizen["phone"])
        resp = await self.client.post(
            "/accounts/password",
            json={"id_number": citizen["id_number"], "current_password": initial, "new_password": new_password},
        )
        assert resp.status_code == 204, resp.text
        return new_password
