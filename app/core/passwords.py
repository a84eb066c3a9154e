"""Password hashing (argon2id via passlib's CryptContext) and the NIST SP 800-63B policy.

Hashing costs ~24 ms of CPU (docs/facts.md §5: ~42 verifies/s/core), so it always runs in a
worker thread, never on the event loop: every call goes through ``PasswordHasher._in_thread``,
which also counts it (app/core/metrics.py: calls waiting for a thread and running, their wait
and run times).
"""

from __future__ import annotations

import itertools
import secrets
import time
import unicodedata
from collections.abc import Callable
from enum import StrEnum
from functools import lru_cache
from importlib import resources
from typing import Any, TypeVar

import anyio.to_thread
from passlib.context import CryptContext

from app.core.config import Settings
from app.core.metrics import ARGON2_DURATION, ARGON2_QUEUE, ARGON2_RUNNING, ARGON2_WAIT

R = TypeVar("R")


class PasswordHasher:
    def __init__(self, settings: Settings) -> None:
        self.context = CryptContext(
            schemes=["argon2"],
            argon2__type="ID",
            argon2__memory_cost=settings.argon2_memory_kib,
            argon2__time_cost=settings.argon2_time_cost,
            argon2__parallelism=settings.argon2_parallelism,
        )
        # Verified when the account does not exist, so that the answer takes as long.
        self._dummy = self.context.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await self._in_thread(self.context.hash, _normalise(password))

    async def verify(self, password: str, stored: str | None) -> tuple[bool, str | None]:
        """(ok, new_hash): new_hash is set when the stored hash uses outdated parameters."""
        if stored is None:
            await self._in_thread(self.context.verify, _normalise(password), self._dummy)
            return False, None
        ok, new_hash = await self._in_thread(self.context.verify_and_update, _normalise(password), stored)
        return bool(ok), new_hash

    @staticmethod
    async def _in_thread(fn: Callable[..., R], *args: Any) -> R:
        """Run one argon2id call in a worker thread, counted waiting from now until a thread
        takes it, then running."""
        queued = time.perf_counter()
        started = False

        def run() -> R:
            nonlocal started
            started = True
            began = time.perf_counter()
            ARGON2_QUEUE.dec()
            ARGON2_WAIT.observe(began - queued)
            ARGON2_RUNNING.inc()
            try:
                return fn(*args)
            finally:
                ARGON2_RUNNING.dec()
                ARGON2_DURATION.observe(time.perf_counter() - began)

        ARGON2_QUEUE.inc()
        try:
            return await anyio.to_thread.run_sync(run)
        finally:
            if not started:  # cancelled while waiting for a thread: it never ran
                ARGON2_QUEUE.dec()


def _normalise(password: str) -> str:
    # NIST SP 800-63B §5.1.1.2: apply Unicode normalisation (NFKC) before hashing.
    return unicodedata.normalize("NFKC", password)


@lru_cache(maxsize=1)
def _blocklist() -> frozenset[str]:
    text = resources.files("app.core").joinpath("data/common-passwords.txt").read_text("utf-8")
    return frozenset(line.strip().casefold() for line in text.splitlines() if line.strip() and not line.startswith("#"))


class PasswordRule(StrEnum):
    too_short = "too_short"
    too_long = "too_long"
    too_common = "too_common"
    personal = "personal"
    same_as_current = "same_as_current"


_RULE_MESSAGES: dict[PasswordRule, dict[str, str]] = {
    PasswordRule.too_short: {
        "en": "Use at least {min} characters.",
        "vi": "Dùng ít nhất {min} ký tự.",
    },
    PasswordRule.too_long: {"en": "Use at most 128 characters.", "vi": "Dùng tối đa 128 ký tự."},
    PasswordRule.too_common: {
        "en": "This password is too common or too easy to guess.",
        "vi": "Mật khẩu này quá phổ biến hoặc quá dễ đoán.",
    },
    PasswordRule.personal: {
        "en": "Do not use your ID number, phone number or name in the password.",
        "vi": "Không dùng số định danh, số điện thoại hoặc họ tên trong mật khẩu.",
    },
    PasswordRule.same_as_current: {
        "en": "Choose a password different from the current one.",
        "vi": "Hãy chọn mật khẩu khác mật khẩu hiện tại.",
    },
}


def rule_message(rule: PasswordRule, locale: str, min_length: int) -> str:
    return _RULE_MESSAGES[rule][locale].format(min=min_length)


def password_rules_broken(password: str, *, min_length: int, context_words: tuple[str, ...] = ()) -> list[PasswordRule]:
    """The rules a new password breaks (empty: accepted). No composition rules (NIST)."""
    pw = _normalise(password)
    broken = []
    if len(pw) < min_length:
        broken.append(PasswordRule.too_short)
    if len(pw) > 128:
        broken.append(PasswordRule.too_long)
    folded = pw.casefold()
    if folded in _blocklist() or _is_trivial(folded):
        broken.append(PasswordRule.too_common)
    if any(word and len(word) >= 4 and word.casefold() in folded for word in context_words):
        broken.append(PasswordRule.personal)
    return broken


def password_problems(password: str, *, min_length: int, context_words: tuple[str, ...] = ()) -> list[str]:
    """Why a new password is refused, in English (empty: accepted)."""
    rules = password_rules_broken(password, min_length=min_length, context_words=context_words)
    return [rule_message(r, "en", min_length) for r in rules]


def _is_trivial(pw: str) -> bool:
    if len(set(pw)) <= 2:
        return True
    # Runs such as 123456789012345 or abcdefghijklmno.
    steps = {ord(b) - ord(a) for a, b in itertools.pairwise(pw)}
    if steps <= {1} or steps <= {-1} or steps <= {1, -9}:
        return True
    # The same short chunk repeated.
    for size in range(1, 5):
        chunk = pw[:size]
        if chunk * (len(pw) // size) + chunk[: len(pw) % size] == pw:
            return True
    return any(base in pw and len(pw) - len(base) <= 4 for base in _blocklist() if len(base) >= 8)


_ALPHABET = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def generate_initial_password(length: int = 16) -> str:
    """A random password for the first SMS: no look-alike characters, ~93 bits at 16."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))
