"""SMS and email delivery through a transactional outbox.

A request never talks to a gateway: it adds a message to ``sms_outbox`` (or ``email_outbox``)
in the same transaction as the change that needs it (so an OTP is never sent for a
registration that was rolled back, and never lost for one that committed). A worker delivers
queued messages.

Two gateways per channel:
- outbox (default): messages stay in the database; ``eid outbox`` and the tests read them.
- webhook: POSTs each message to an HTTP gateway with retries and backoff.

Bodies hold OTPs and initial passwords, so they are sealed (AES-GCM) at rest, overwritten once
delivered and never logged.

SMS with Vietnamese diacritics are sent as UCS-2: 70 characters in one segment, 67 per segment
when concatenated (3GPP TS 23.038 and TS 23.040 §9.2.3.24.1: the 6-octet concatenation header
leaves 134 of 140 octets); only text within the GSM 7-bit default alphabet gets 160/153.
``sms_segments`` counts them, and the message texts are kept to two segments (a test checks).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import httpx
from sqlalchemy import Index, Integer, String, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from app.core.config import Settings, SmsGatewayKind
from app.core.crypto import Keyring
from app.core.db import Base, UTCDateTime
from app.core.metrics import watch_outbox
from app.core.outbox import deliver_due
from app.core.privacy import mask_phone

log = logging.getLogger("eid.sms")


class _QueuedMessage:
    """The columns of both outboxes."""

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    purpose: Mapped[str] = mapped_column(String(32))
    body_sealed: Mapped[str] = mapped_column(String(2000))
    status: Mapped[str] = mapped_column(String(10), default="queued")  # queued | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(200))


class SmsMessage(_QueuedMessage, Base):
    __tablename__ = "sms_outbox"

    phone: Mapped[str] = mapped_column(String(16))

    __table_args__ = (
        Index("ix_sms_outbox_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_sms_outbox_phone", "phone"),
    )


class EmailMessage(_QueuedMessage, Base):
    __tablename__ = "email_outbox"

    address: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(200))

    __table_args__ = (
        Index("ix_email_outbox_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_email_outbox_address", "address"),
    )


watch_outbox("sms", SmsMessage)
watch_outbox("email", EmailMessage)


# GSM 03.38 default alphabet and its extension table (each extension character costs two septets).
_GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXT = set("^{}\\[~]|€\f")


def sms_segments(text: str) -> int:
    """How many SMS segments the text takes."""
    if all(ch in _GSM7 or ch in _GSM7_EXT for ch in text):
        septets = sum(2 if ch in _GSM7_EXT else 1 for ch in text)
        return 1 if septets <= 160 else -(-septets // 153)
    units = len(text.encode("utf-16-le")) // 2  # UCS-2 code units (astral characters take two)
    return 1 if units <= 70 else -(-units // 67)


def _sealed(keyring: Keyring, msg_id: uuid.UUID, text: str) -> str:
    return keyring.sealer.seal(text.encode(), context=str(msg_id))


def queue_sms(
    session: AsyncSession, keyring: Keyring, *, phone: str, text: str, purpose: str, now: dt.datetime
) -> SmsMessage:
    """Add a message to the caller's transaction; it is delivered after commit."""
    msg_id = uuid.uuid4()
    msg = SmsMessage(
        id=msg_id, phone=phone, purpose=purpose, body_sealed=_sealed(keyring, msg_id, text), status="queued",
        attempts=0, created_at=now, next_attempt_at=now,
    )  # fmt: skip
    session.add(msg)
    return msg


def queue_email(
    session: AsyncSession, keyring: Keyring, *, address: str, subject: str, text: str, purpose: str, now: dt.datetime
) -> EmailMessage:
    msg_id = uuid.uuid4()
    msg = EmailMessage(
        id=msg_id, address=address, subject=subject, purpose=purpose, body_sealed=_sealed(keyring, msg_id, text),
        status="queued", attempts=0, created_at=now, next_attempt_at=now,
    )  # fmt: skip
    session.add(msg)
    return msg


def open_body(keyring: Keyring, msg: SmsMessage | EmailMessage) -> str:
    return keyring.sealer.open(msg.body_sealed, context=str(msg.id)).decode()


async def read_outbox(
    session: AsyncSession, keyring: Keyring, *, phone: str | None = None, limit: int = 20
) -> list[dict[str, str]]:
    """Newest SMS first, decrypted: for the CLI, tests and demo mode only."""
    stmt = select(SmsMessage).order_by(SmsMessage.created_at.desc(), SmsMessage.id).limit(limit)
    if phone:
        stmt = stmt.where(SmsMessage.phone == phone)
    rows = (await session.scalars(stmt)).all()
    return [
        {
            "id": str(m.id), "phone": m.phone, "purpose": m.purpose, "status": m.status,
            "created_at": m.created_at.isoformat(), "text": open_body(keyring, m),
        }
        for m in rows
    ]  # fmt: skip


async def read_email_outbox(
    session: AsyncSession, keyring: Keyring, *, address: str | None = None, limit: int = 20
) -> list[dict[str, str]]:
    stmt = select(EmailMessage).order_by(EmailMessage.created_at.desc(), EmailMessage.id).limit(limit)
    if address:
        stmt = stmt.where(EmailMessage.address == address)
    rows = (await session.scalars(stmt)).all()
    return [
        {
            "id": str(m.id), "address": m.address, "subject": m.subject, "purpose": m.purpose, "status": m.status,
            "created_at": m.created_at.isoformat(), "text": open_body(keyring, m),
        }
        for m in rows
    ]  # fmt: skip


class SmsGateway(Protocol):
    async def send(self, phone: str, text: str) -> None: ...


class EmailGateway(Protocol):
    async def send_email(self, address: str, subject: str, text: str) -> None: ...


class WebhookGateway:
    """POST ``{"to", "text"}`` (SMS) or ``{"to", "subject", "text"}`` (email) with a bearer token."""

    def __init__(self, url: str, token: str | None, client: httpx.AsyncClient | None = None) -> None:
        self.url = url
        self.token = token
        self.client = client or httpx.AsyncClient(timeout=5.0)

    async def _post(self, body: dict[str, str]) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        resp = await self.client.post(self.url, json=body, headers=headers)
        resp.raise_for_status()

    async def send(self, phone: str, text: str) -> None:
        await self._post({"to": phone, "text": text})

    async def send_email(self, address: str, subject: str, text: str) -> None:
        await self._post({"to": address, "subject": subject, "text": text})


def _webhook(url: str | None, token: Any) -> WebhookGateway:
    assert url
    return WebhookGateway(url, token.get_secret_value() if token else None)


def make_gateway(settings: Settings) -> SmsGateway | None:
    """None for the outbox gateway: there is nothing to deliver."""
    if settings.sms_gateway is SmsGatewayKind.webhook:
        return _webhook(settings.sms_webhook_url, settings.sms_webhook_token)
    return None


def make_email_gateway(settings: Settings) -> EmailGateway | None:
    if settings.email_gateway is SmsGatewayKind.webhook:
        return _webhook(settings.email_webhook_url, settings.email_webhook_token)
    return None


def _backoff(attempts: int) -> dt.timedelta:
    return dt.timedelta(seconds=min(2**attempts, 600))


async def _deliver(
    sessionmaker: async_sessionmaker[AsyncSession],
    model: type[SmsMessage] | type[EmailMessage],
    keyring: Keyring,
    send: Callable[[Any], Awaitable[None]],
    *,
    now: dt.datetime,
    max_attempts: int,
    batch: int,
) -> int:
    """Deliver due messages once (app/core/outbox.py: no transaction is open while the gateway
    is called); returns how many were sent."""

    def record(msg: Any, error: Exception | None) -> None:
        if error is not None:
            msg.last_error = type(error).__name__
            if msg.status == "failed":
                to = mask_phone(msg.phone) if isinstance(msg, SmsMessage) else "an email address"
                log.warning("message %s to %s failed for good", msg.id, to)
            return
        msg.sent_at = now
        msg.last_error = None
        # The secret has left; keep no readable copy once delivered.
        msg.body_sealed = keyring.sealer.seal(b"[delivered]", context=str(msg.id))

    def prepare(msg: Any) -> Any:
        if isinstance(msg, SmsMessage):
            return (msg.phone, open_body(keyring, msg))
        return (msg.address, msg.subject, open_body(keyring, msg))

    return await deliver_due(
        sessionmaker, model, now=now, max_attempts=max_attempts, backoff=_backoff, prepare=prepare, send=send,
        record=record, batch=batch,
    )  # fmt: skip


async def deliver_pending(
    sessionmaker: async_sessionmaker[AsyncSession],
    gateway: SmsGateway,
    keyring: Keyring,
    *,
    now: dt.datetime,
    max_attempts: int,
    batch: int = 50,
) -> int:
    async def send(message: tuple[str, str]) -> None:
        await gateway.send(*message)

    return await _deliver(sessionmaker, SmsMessage, keyring, send, now=now, max_attempts=max_attempts, batch=batch)


async def deliver_pending_email(
    sessionmaker: async_sessionmaker[AsyncSession],
    gateway: EmailGateway,
    keyring: Keyring,
    *,
    now: dt.datetime,
    max_attempts: int,
    batch: int = 50,
) -> int:
    async def send(message: tuple[str, str, str]) -> None:
        await gateway.send_email(*message)

    return await _deliver(sessionmaker, EmailMessage, keyring, send, now=now, max_attempts=max_attempts, batch=batch)


async def delivery_loop(
    sessionmaker: async_sessionmaker[AsyncSession],
    sms: SmsGateway | None,
    email: EmailGateway | None,
    keyring: Keyring,
    settings: Settings,
    clock_now: ClockNow,
    stop: asyncio.Event,
) -> None:
    """Deliver due messages about once a second until ``stop`` is set."""
    while not stop.is_set():
        try:
            if sms is not None:
                await deliver_pending(
                    sessionmaker, sms, keyring, now=clock_now(), max_attempts=settings.sms_max_attempts
                )
            if email is not None:
                await deliver_pending_email(
                    sessionmaker, email, keyring, now=clock_now(), max_attempts=settings.sms_max_attempts
                )
        except Exception:  # the loop must survive a database hiccup
            log.exception("message delivery pass failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)


class ClockNow(Protocol):
    def __call__(self) -> dt.datetime: ...
