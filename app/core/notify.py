"""Security notifications: the citizen hears of everything that touches their account's security.

Each notification is a row the citizen sees on their security page (``GET /me/notifications``)
and, through the outboxes, an SMS (and an email where the officer recorded one). Rules:
- Vietnamese with diacritics, short: every SMS fits two UCS-2 segments (134 characters) once its
  parameters are cut to their bounds (a test renders each at its longest).
- Never a link, a password or any other secret: a citizen who gets one learns what happened
  and what to do, nothing an attacker could use (NIST SP 800-63B §6.1.2.1 and OWASP ASVS V2.2.3:
  notify of authentication changes; phishing-safe content).
- At most ``EID_NOTIFY_SMS_PER_HOUR`` SMS per phone and hour, counted in this table (shared
  by every process, inside the caller's transaction): past that, the notification is still
  recorded and shown, but no SMS is sent, so that the service cannot be used to flood a phone.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from app.core.crypto import Keyring
from app.core.db import Base, UTCDateTime
from app.core.sms import queue_email, queue_sms

# Vietnam keeps UTC+7 all year (no daylight saving time): times in messages are local.
VIETNAM = dt.timezone(dt.timedelta(hours=7), "ICT")


class Notice(StrEnum):
    new_browser = "new_browser"
    lockout = "lockout"
    account_locked = "account_locked"
    account_unlocked = "account_unlocked"
    account_revoked = "account_revoked"
    account_reissued = "account_reissued"
    password_changed = "password_changed"
    password_reset = "password_reset"
    phone_changed = "phone_changed"
    ekyc_request = "ekyc_request"
    dependent_claimed = "dependent_claimed"
    otp_locked = "otp_locked"


class Notification(Base):
    __tablename__ = "notifications"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    # None when there is no account yet (e.g. registration codes guessed for a registry record).
    account_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # The phone an SMS was queued to; None when none was sent (no phone, or the hourly limit).
    sms_phone: Mapped[str | None] = mapped_column(String(16))
    emailed: Mapped[bool] = mapped_column(default=False)

    __table_args__ = (
        Index("ix_notifications_account_id_created_at", "account_id", "created_at"),
        Index("ix_notifications_sms_phone_created_at", "sms_phone", "created_at"),
    )


# Bounds of the parameters as they appear in an SMS (the page shows them whole).
_BOUNDS = {"reason": 40, "bank": 32, "binding": 20, "name": 32}

# Vietnamese (SMS, email, pages) and English (pages, email) texts.
TEXTS: dict[Notice, dict[str, str]] = {
    Notice.new_browser: {
        "vi": "Tài khoản định danh của bạn vừa đăng nhập từ một trình duyệt mới lúc {time}. "
        "Không phải bạn? Hãy đổi mật khẩu ngay.",
        "en": "Your e-ID account signed in from a new browser at {time}. Not you? Change your password now.",
    },
    Notice.lockout: {
        "vi": "Tài khoản định danh bị tạm khóa đến {until} do nhập sai mật khẩu nhiều lần.",
        "en": "Your e-ID account is locked until {until} after too many wrong passwords.",
    },
    Notice.account_locked: {
        "vi": "Tài khoản định danh của bạn đã bị cơ quan quản lý khóa. Lý do: {reason}",
        "en": "Your e-ID account was locked by an officer. Reason: {reason}",
    },
    Notice.account_unlocked: {
        "vi": "Tài khoản định danh của bạn đã được mở khóa. Lý do: {reason}",
        "en": "Your e-ID account was unlocked. Reason: {reason}",
    },
    Notice.account_revoked: {
        "vi": "Tài khoản định danh của bạn đã bị thu hồi. Lý do: {reason}",
        "en": "Your e-ID account was revoked. Reason: {reason}",
    },
    Notice.account_reissued: {
        "vi": "Tài khoản định danh mới đã được cấp tại cơ quan công an lúc {time}, thay tài khoản đã thu hồi.",
        "en": "A new e-ID account was issued in person at {time}, replacing the revoked one.",
    },
    Notice.password_changed: {
        "vi": "Mật khẩu tài khoản định danh vừa được đổi lúc {time}. Không phải bạn? Liên hệ cơ quan công an.",
        "en": "Your e-ID password was changed at {time}. Not you? Contact the police office.",
    },
    Notice.password_reset: {
        "vi": "Mật khẩu tài khoản định danh vừa được đặt lại lúc {time}. Không phải bạn? Liên hệ cơ quan công an.",
        "en": "Your e-ID password was reset at {time}. Not you? Contact the police office.",
    },
    Notice.phone_changed: {
        "vi": "Số điện thoại của tài khoản định danh đã đổi thành {phone} lúc {time}.",
        "en": "Your e-ID account's phone number was changed to {phone} at {time}.",
    },
    Notice.ekyc_request: {
        "vi": "{bank} đề nghị bạn chia sẻ thông tin. Mã đối chiếu: {binding}. Trả lời trong ứng dụng định danh.",
        "en": "{bank} asks to verify your information. Binding message: {binding}. Answer in the e-ID app.",
    },
    Notice.dependent_claimed: {
        "vi": "{name} đã nhận lại tài khoản định danh của mình lúc {time}; bạn không còn thay mặt nữa.",
        "en": "{name} took over their own e-ID account at {time}; you no longer act for them.",
    },
    Notice.otp_locked: {
        "vi": "Đăng ký và đặt lại mật khẩu tài khoản định danh tạm dừng đến {until} do nhập sai mã nhiều lần.",
        "en": "e-ID registration and password reset are paused until {until} after too many wrong codes.",
    },
}

EMAIL_SUBJECT = "Thông báo bảo mật tài khoản định danh điện tử / e-ID security notice"


def local_time(moment: dt.datetime) -> str:
    """``16:05 04/12/2026`` in Vietnam's time (how Vietnamese write a time and date)."""
    return moment.astimezone(VIETNAM).strftime("%H:%M %d/%m/%Y")


def _bounded(params: dict[str, str]) -> dict[str, str]:
    out = {}
    for key, value in params.items():
        limit = _BOUNDS.get(key)
        out[key] = value if limit is None or len(value) <= limit else value[: limit - 1].rstrip() + "…"
    return out


def render(kind: Notice | str, params: dict[str, str], locale: str = "vi", *, bounded: bool = False) -> str:
    text = TEXTS[Notice(kind)][locale]
    return text.format(**(_bounded(params) if bounded else params))


@dataclass(frozen=True, slots=True)
class Recipient:
    account_id: uuid.UUID | None
    phone: str | None
    email: str | None = None


async def notify(
    session: AsyncSession,
    keyring: Keyring,
    *,
    to: Recipient,
    kind: Notice,
    params: dict[str, str],
    now: dt.datetime,
    sms_per_hour: int,
) -> Notification:
    """Record the notification and queue its SMS (and email) in the caller's transaction."""
    sms_phone = None
    if to.phone:
        sent = await session.scalar(
            select(func.count())
            .select_from(Notification)
            .where(Notification.sms_phone == to.phone, Notification.created_at > now - dt.timedelta(hours=1))
        )
        if (sent or 0) < sms_per_hour:
            sms_phone = to.phone
            text = render(kind, params, bounded=True)
            queue_sms(session, keyring, phone=to.phone, text=text, purpose=f"notice_{kind.value}", now=now)
    if to.email:
        text = render(kind, params) + "\n\n" + render(kind, params, "en")
        queue_email(
            session,
            keyring,
            address=to.email,
            subject=EMAIL_SUBJECT,
            text=text,
            purpose=f"notice_{kind.value}",
            now=now,
        )
    row = Notification(
        id=uuid.uuid4(), account_id=to.account_id, kind=kind.value, params=params, created_at=now,
        sms_phone=sms_phone, emailed=bool(to.email),
    )  # fmt: skip
    session.add(row)
    return row


async def recent(session: AsyncSession, account_id: uuid.UUID, limit: int = 50) -> list[Notification]:
    rows = await session.scalars(
        select(Notification)
        .where(Notification.account_id == account_id)
        .order_by(Notification.created_at.desc(), Notification.id)
        .limit(limit)
    )
    return list(rows.all())
