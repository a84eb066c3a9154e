"""SMS delivery through a transactional outbox.

A request never talks to the SMS gateway: it adds a message to ``sms_outbox`` in the same
transaction as the change that needs it (so an OTP is never sent for a registration that was
rolled back, and never lost for one that committed). A worker delivers queued messages.

Two gateways implement :class:`SmsGateway`:
- ``OutboxGateway`` (default): messages stay in the database; ``eid outbox`` and the tests read them.
- ``WebhookGateway``: POSTs each message to an HTTP gateway with retries and backoff.

Bodies hold OTPs and initial passwords, so they are sealed (AES-GCM) at rest and never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from typing import Protocol

import httpx
from sqlalchemy import Index, Integer, String, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from app.core.config import Settings, SmsGatewayKind
from app.core.crypto import Keyring
from app.core.db import Base, UTCDateTime
from app.core.outbox import deliver_due
from app.core.privacy import mask_phone

log = logging.getLogger("eid.sms")


class SmsMessage(Base):
    __tablename__ = "sms_outbox"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    phone: Mapped[str] = mapped_column(String(16))
    purpose: Mapped[str] = mapped_column(String(32))
    body_sealed: Mapped[str] = mapped_column(String(2000))
    status: Mapped[str] = mapped_column(String(10), default="queued")  # queued | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        Index("ix_sms_outbox_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_sms_outbox_phone", "phone"),
    )


def queue_sms(
    session: AsyncSession, keyring: Keyring, *, phone: str, text: str, purpose: str, now: dt.datetime
) -> SmsMessage:
    """Add a message to the caller's transaction; it is delivered after commit."""
    msg_id = uuid.uuid4()
    msg = SmsMessage(
        id=msg_id,
        phone=phone,
        purpose=purpose,
        body_sealed=keyring.sealer.seal(text.encode(), context=str(msg_id)),
        status="queued",
        attempts=0,
        created_at=now,
        next_attempt_at=now,
    )
    session.add(msg)
    return msg


def open_body(keyring: Keyring, msg: SmsMessage) -> str:
    return keyring.sealer.open(msg.body_sealed, context=str(msg.id)).decode()


async def read_outbox(
    session: AsyncSession, keyring: Keyring, *, phone: str | None = None, limit: int = 20
) -> list[dict[str, str]]:
    """Newest messages first, decrypted: for the CLI, tests and (later) demo mode only."""
    stmt = select(SmsMessage).order_by(SmsMessage.created_at.desc(), SmsMessage.id).limit(limit)
    if phone:
        stmt = stmt.where(SmsMessage.phone == phone)
    rows = (await session.scalars(stmt)).all()
    return [
        {
            "id": str(m.id),
            "phone": m.phone,
            "purpose": m.purpose,
            "status": m.status,
            "created_at": m.created_at.isoformat(),
            "text": open_body(keyring, m),
        }
        for m in rows
    ]


class SmsGateway(Protocol):
    async def send(self, phone: str, text: str) -> None: ...


class OutboxGateway:
    """Keeps messages in the outbox table; nothing leaves the machine."""

    async def send(self, phone: str, text: str) -> None:  # pragma: no cover - never called
        raise RuntimeError("the outbox gateway does not deliver")


class WebhookGateway:
    def __init__(self, url: str, token: str | None, client: httpx.AsyncClient | None = None) -> None:
        self.url = url
        self.token = token
        self.client = client or httpx.AsyncClient(timeout=5.0)

    async def send(self, phone: str, text: str) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        resp = await self.client.post(self.url, json={"to": phone, "text": text}, headers=headers)
        resp.raise_for_status()


def make_gateway(settings: Settings) -> SmsGateway | None:
    """None for the outbox gateway: there is nothing to deliver."""
    if settings.sms_gateway is SmsGatewayKind.webhook:
        assert settings.sms_webhook_url
        token = settings.sms_webhook_token.get_secret_value() if settings.sms_webhook_token else None
        return WebhookGateway(settings.sms_webhook_url, token)
    return None


def _backoff(attempts: int) -> dt.timedelta:
    return dt.timedelta(seconds=min(2**attempts, 600))


async def deliver_pending(
    sessionmaker: async_sessionmaker[AsyncSession],
    gateway: SmsGateway,
    keyring: Keyring,
    *,
    now: dt.datetime,
    max_attempts: int,
    batch: int = 50,
) -> int:
    """Deliver due messages once (app/core/outbox.py: no transaction is open while the gateway
    is called); returns how many were sent."""

    def record(msg: SmsMessage, error: Exception | None) -> None:
        if error is not None:
            msg.last_error = type(error).__name__
            if msg.status == "failed":
                log.warning("sms %s to %s failed for good", msg.id, mask_phone(msg.phone))
            return
        msg.sent_at = now
        msg.last_error = None
        # The secret has left; keep no readable copy once delivered.
        msg.body_sealed = keyring.sealer.seal(b"[delivered]", context=str(msg.id))

    async def send(message: tuple[str, str]) -> None:
        await gateway.send(*message)

    return await deliver_due(
        sessionmaker,
        SmsMessage,
        now=now,
        max_attempts=max_attempts,
        backoff=_backoff,
        prepare=lambda msg: (msg.phone, open_body(keyring, msg)),
        send=send,
        record=record,
        batch=batch,
    )


async def delivery_loop(
    sessionmaker: async_sessionmaker[AsyncSession],
    gateway: SmsGateway,
    keyring: Keyring,
    settings: Settings,
    clock_now: ClockNow,
    stop: asyncio.Event,
) -> None:
    """Deliver due messages about once a second until ``stop`` is set."""
    while not stop.is_set():
        try:
            await deliver_pending(
                sessionmaker, gateway, keyring, now=clock_now(), max_attempts=settings.sms_max_attempts
            )
        except Exception:  # the loop must survive a database hiccup
            log.exception("sms delivery pass failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)


class ClockNow(Protocol):
    def __call__(self) -> dt.datetime: ...
