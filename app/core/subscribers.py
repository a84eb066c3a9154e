"""Does this phone belong to this citizen? The mobile operators' subscriber registry answers.

Vietnam's operators register every SIM to its owner's identity papers (Decree 49/2017/NĐ-CP,
amending Decree 25/2011/NĐ-CP), and subscriber data must match the national population database
(Decree 163/2024/NĐ-CP), so an operator can confirm that a phone number is subscribed under an
ID number. Level-1 proofing
(app/accounts/registration.py) accepts a phone only when the population registry links it to
the citizen or this check confirms it: a phone the caller merely typed proves nothing
(NIST SP 800-63A §5.3.3: the address of record must come from an authoritative source).

``EID_SUBSCRIBER_CHECK`` chooses the implementation:
- ``registry-only`` (default): confirms nothing; only registry phones qualify.
- ``http``: an operator gateway, ``POST {url}`` with ``{"id_number", "phone"}`` and a bearer
  token, answering ``{"match": true|false}``. Each call has a timeout; timeouts, transport
  errors and 5xx are retried (``EID_SUBSCRIBER_CHECK_RETRIES``) with a short backoff; any
  other answer is a refusal. When it stays unavailable, the check fails closed: the phone is
  not confirmed, the citizen gets the answer every caller gets (register in person, or try
  again later), and the audit row says ``subscriber_check_unavailable``.
- ``fake``: pairs from a JSON file (``EID_SUBSCRIBER_FAKE_FILE``), for tests and demo data;
  refused in production.
"""

from __future__ import annotations

import asyncio
import json
import logging
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import httpx

from app.core.config import Settings, SubscriberCheckKind

log = logging.getLogger("eid.subscribers")


class Subscription(StrEnum):
    confirmed = "confirmed"
    not_confirmed = "not_confirmed"
    unavailable = "unavailable"


class SubscriberCheck(Protocol):
    async def check(self, id_number: str, phone: str) -> Subscription: ...

    async def close(self) -> None: ...


class RegistryOnly:
    async def check(self, id_number: str, phone: str) -> Subscription:
        return Subscription.not_confirmed

    async def close(self) -> None:
        return None


class FakeSubscriberCheck:
    """Confirms the pairs it holds; ``add`` lets a test or the demo seed give it more."""

    def __init__(self, pairs: dict[str, set[str]] | None = None) -> None:
        self.pairs: dict[str, set[str]] = pairs or {}

    @classmethod
    def from_file(cls, path: Path | None) -> FakeSubscriberCheck:
        if path is None or not path.exists():
            return cls()
        raw = json.loads(path.read_text("utf-8"))
        return cls({str(k): {str(p) for p in v} for k, v in raw.items()})

    def add(self, id_number: str, phone: str) -> None:
        self.pairs.setdefault(id_number, set()).add(phone)

    async def check(self, id_number: str, phone: str) -> Subscription:
        return Subscription.confirmed if phone in self.pairs.get(id_number, ()) else Subscription.not_confirmed

    async def close(self) -> None:
        return None


class HttpSubscriberCheck:
    def __init__(
        self, url: str, token: str | None, *, timeout: float, retries: int, client: httpx.AsyncClient | None = None
    ) -> None:
        self.url = url
        self.token = token
        self.retries = retries
        self.client = client or httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    async def check(self, id_number: str, phone: str) -> Subscription:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(0.2 * 2 ** (attempt - 1))
            try:
                resp = await self.client.post(self.url, json={"id_number": id_number, "phone": phone}, headers=headers)
            except httpx.HTTPError as exc:
                log.warning("subscriber check: %s (attempt %d)", type(exc).__name__, attempt + 1)
                continue
            if resp.status_code >= 500:
                log.warning("subscriber check: gateway answered %d (attempt %d)", resp.status_code, attempt + 1)
                continue
            try:
                match = resp.status_code == 200 and resp.json().get("match") is True
            except (ValueError, AttributeError):
                match = False
            return Subscription.confirmed if match else Subscription.not_confirmed
        return Subscription.unavailable

    async def close(self) -> None:
        await self.client.aclose()


def make_subscriber_check(settings: Settings) -> SubscriberCheck:
    if settings.subscriber_check is SubscriberCheckKind.http:
        assert settings.subscriber_check_url
        token = settings.subscriber_check_token.get_secret_value() if settings.subscriber_check_token else None
        return HttpSubscriberCheck(
            settings.subscriber_check_url,
            token,
            timeout=settings.subscriber_check_timeout_seconds,
            retries=settings.subscriber_check_retries,
        )
    if settings.subscriber_check is SubscriberCheckKind.fake:
        return FakeSubscriberCheck.from_file(settings.subscriber_fake_file)
    return RegistryOnly()
