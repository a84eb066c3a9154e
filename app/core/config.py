"""One Settings object for the whole service, read from the environment (prefix ``EID_``)."""

from __future__ import annotations

import base64
import os
import secrets
import sys
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SQLITE_URL = "sqlite+aiosqlite:///./var/eid.db"


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class SmsGatewayKind(StrEnum):
    outbox = "outbox"  # messages stay in the database outbox (read with `eid outbox`)
    webhook = "webhook"  # a worker posts each message to an HTTP gateway, with retries


class RateLimitStore(StrEnum):
    auto = "auto"  # redis when EID_REDIS_URL is set, else database
    redis = "redis"
    database = "database"
    memory = "memory"  # one process only: refused with --workers above 1 and in production


class SubscriberCheckKind(StrEnum):
    registry_only = "registry-only"  # only a phone the population registry links to the citizen
    http = "http"  # also ask the mobile operators' subscriber registry through an HTTP gateway
    fake = "fake"  # a list of (ID number, phone) pairs: tests and demo fixtures, never production


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EID_", env_file=None, extra="ignore")

    env: Environment = Environment.development
    # Demo mode (`eid serve --demo`): throwaway SQLite, fixtures, deterministic keys, the
    # /_demo routes. Never in production.
    demo: bool = False
    database_url: str = DEFAULT_SQLITE_URL
    database_pool_size: Annotated[int, Field(ge=1, le=200)] = 10
    # How long a request waits for a free connection before it answers 503.
    database_pool_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 5.0
    redis_url: str | None = None
    redis_prefix: str = "eid:"
    rate_limits: RateLimitStore = RateLimitStore.auto
    issuer: str = "http://127.0.0.1:8000"
    data_dir: Path = Path("./var")

    # 32 random bytes, urlsafe-base64. Derives the HMAC keys (OTP and token hashing) and the
    # key-encryption key that wraps private signing keys and queued SMS bodies at rest.
    secret_key: SecretStr | None = None

    sms_gateway: SmsGatewayKind = SmsGatewayKind.outbox
    sms_webhook_url: str | None = None
    sms_webhook_token: SecretStr | None = None
    sms_max_attempts: Annotated[int, Field(ge=1, le=50)] = 8
    email_gateway: SmsGatewayKind = SmsGatewayKind.outbox
    email_webhook_url: str | None = None
    email_webhook_token: SecretStr | None = None
    # Security notifications by SMS per phone and hour; past it they are only recorded (shown
    # on the citizen's security page), so that they cannot be used to flood a phone.
    notify_sms_per_hour: Annotated[int, Field(ge=1, le=1000)] = 6

    # Level-1 proofing: how a phone the registry does not hold is confirmed to belong to the
    # citizen (app/accounts/proofing.py).
    subscriber_check: SubscriberCheckKind = SubscriberCheckKind.registry_only
    subscriber_check_url: str | None = None
    subscriber_check_token: SecretStr | None = None
    subscriber_check_timeout_seconds: Annotated[float, Field(gt=0, le=30)] = 2.0
    subscriber_check_retries: Annotated[int, Field(ge=0, le=5)] = 2
    # fake: a JSON file {"<id_number>": ["+84…", …]} of the pairs the fake operator confirms.
    subscriber_fake_file: Path | None = None

    # Password hashing: OWASP argon2id (m=19456 KiB, t=2, p=1). Tests lower these.
    argon2_memory_kib: Annotated[int, Field(ge=8, le=1048576)] = 19456
    argon2_time_cost: Annotated[int, Field(ge=1, le=20)] = 2
    argon2_parallelism: Annotated[int, Field(ge=1, le=16)] = 1
    password_min_length: Annotated[int, Field(ge=8, le=64)] = 15

    lockout_threshold: Annotated[int, Field(ge=1, le=100)] = 5
    lockout_minutes: Annotated[int, Field(ge=1, le=10080)] = 15
    otp_ttl_seconds: Annotated[int, Field(ge=30, le=3600)] = 300
    otp_max_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    # Wrong codes per ID number and per phone, across challenges, within the window: past
    # this, registration and reset are refused until the oldest failures leave the window.
    otp_failures_per_window: Annotated[int, Field(ge=1, le=1000)] = 10
    otp_failure_window_hours: Annotated[int, Field(ge=1, le=720)] = 24
    # How long a guardian's approval for a dependent (14 or over) to claim their account holds.
    claim_approval_hours: Annotated[int, Field(ge=1, le=720)] = 72
    # Sign-in attempts per ID number per hour (login page and API), on top of the lockout.
    signin_rate_per_hour: Annotated[int, Field(ge=1, le=100000)] = 30
    staff_session_minutes: Annotated[int, Field(ge=5, le=1440)] = 480
    citizen_session_minutes: Annotated[int, Field(ge=5, le=43200)] = 60
    registration_rate_per_hour: Annotated[int, Field(ge=1, le=100000)] = 10
    # Calls per client and minute over every client-token API (app/core/auth.py).
    client_rate_per_minute: Annotated[int, Field(ge=1, le=1_000_000)] = 600
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024

    # OpenID Connect provider.
    access_token_ttl_seconds: Annotated[int, Field(ge=30, le=86400)] = 600
    id_token_ttl_seconds: Annotated[int, Field(ge=30, le=86400)] = 600
    refresh_token_ttl_seconds: Annotated[int, Field(ge=60, le=90 * 86400)] = 86400
    authorization_code_ttl_seconds: Annotated[int, Field(ge=10, le=600)] = 60
    authorization_request_ttl_seconds: Annotated[int, Field(ge=60, le=3600)] = 900
    # A new key is published this long before it signs, so that cached JWKS already hold it.
    key_publish_lead_seconds: Annotated[int, Field(ge=0, le=7 * 86400)] = 600
    cache_ttl_seconds: Annotated[float, Field(ge=0, le=3600)] = 30.0
    cookie_secure: bool | None = None  # default: Secure when the issuer is https

    # FastAPI's OpenTelemetry spans, metrics and exception logs, for an operator who has set up
    # an OpenTelemetry SDK. Off by default: its exception logs carry exception messages (which
    # may hold personal data), and even unconfigured it asks for the providers on every request.
    telemetry: bool = False
    # Logs: level, and one JSON object per line (json) or a readable line (text); default json
    # in production, text elsewhere (app/core/observability.py).
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] | None = None
    # On SIGTERM: stop accepting, let requests in flight finish within this bound, then exit.
    shutdown_grace_seconds: Annotated[int, Field(ge=0, le=600)] = 20

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value or None

    @field_validator("issuer")
    @classmethod
    def _issuer_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")) or value.endswith("/"):
            raise ValueError("must be an http(s) URL without a trailing slash")
        return value

    @field_validator("secret_key")
    @classmethod
    def _secret_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        try:
            raw = base64.urlsafe_b64decode(value.get_secret_value() + "==")
        except ValueError as exc:
            raise ValueError("must be urlsafe base64") from exc
        if len(raw) < 32:
            raise ValueError("must decode to at least 32 bytes (generate: eid gen-secret)")
        return value

    @model_validator(mode="after")
    def _production_rules(self) -> Settings:
        if self.env is Environment.production:
            if self.demo:
                raise ValueError("demo mode cannot run with EID_ENV=production")
            if self.secret_key is None:
                raise ValueError("EID_SECRET_KEY is required when EID_ENV=production")
            if not self.issuer.startswith("https://"):
                raise ValueError("EID_ISSUER must be https:// when EID_ENV=production")
            if self.rate_limits is RateLimitStore.memory:
                raise ValueError("EID_RATE_LIMITS=memory holds limits in one process: not in production")
            if self.subscriber_check is SubscriberCheckKind.fake:
                raise ValueError("EID_SUBSCRIBER_CHECK=fake is for tests and demo data: not in production")
        if self.rate_limits is RateLimitStore.redis and not self.redis_url:
            raise ValueError("EID_REDIS_URL is required when EID_RATE_LIMITS=redis")
        if self.subscriber_check is SubscriberCheckKind.http and not self.subscriber_check_url:
            raise ValueError("EID_SUBSCRIBER_CHECK_URL is required when EID_SUBSCRIBER_CHECK=http")
        if self.email_gateway is SmsGatewayKind.webhook and not self.email_webhook_url:
            raise ValueError("EID_EMAIL_WEBHOOK_URL is required when EID_EMAIL_GATEWAY=webhook")
        if self.sms_gateway is SmsGatewayKind.webhook and not self.sms_webhook_url:
            raise ValueError("EID_SMS_WEBHOOK_URL is required when EID_SMS_GATEWAY=webhook")
        return self

    @property
    def rate_limit_store(self) -> RateLimitStore:
        if self.rate_limits is RateLimitStore.auto:
            return RateLimitStore.redis if self.redis_url else RateLimitStore.database
        return self.rate_limits

    @property
    def log_format_effective(self) -> str:
        if self.log_format is not None:
            return self.log_format
        return "json" if self.env is Environment.production else "text"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def master_secret(self) -> bytes:
        """The configured secret, or (development only) one generated once and kept in data_dir."""
        if self.secret_key is not None:
            return base64.urlsafe_b64decode(self.secret_key.get_secret_value() + "==")
        path = self.data_dir / "secret.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
        return base64.urlsafe_b64decode(path.read_text().strip() + "==")


def describe_error(exc: ValidationError) -> str:
    """One line naming every bad setting, for start-up failures."""
    parts = []
    for err in exc.errors():
        loc = "EID_" + "_".join(str(p) for p in err["loc"]).upper() if err["loc"] else "settings"
        parts.append(f"{loc}: {err['msg']}")
    return "invalid configuration: " + "; ".join(parts)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def load_settings_or_exit() -> Settings:
    try:
        return get_settings()
    except ValidationError as exc:
        print(describe_error(exc), file=sys.stderr)
        raise SystemExit(2) from None
