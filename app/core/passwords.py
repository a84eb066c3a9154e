"""Password hashing (argon2id via passlib's CryptContext) and the NIST SP 800-63B policy.

Hashing costs ~24 ms of CPU (REFERENCE.md: ~42 verifies/s/core), so it always runs in a
worker thread, never on the event loop.
"""

from __future__ import annotations

import itertools
import secrets
import unicodedata
from functools import lru_cache
from importlib import resources

import anyio.to_thread
from passlib.context import CryptContext

from app.core.config import Settings


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
        return await anyio.to_thread.run_sync(self.context.hash, _normalise(password))

    async def verify(self, password: str, stored: str | None) -> tuple[bool, str | None]:
        """(ok, new_hash): new_hash is set when the stored hash uses outdated parameters."""
        if stored is None:
            await anyio.to_thread.run_sync(self.context.verify, _normalise(password), self._dummy)
            return False, None
        ok, new_hash = await anyio.to_thread.run_sync(self.context.verify_and_update, _normalise(password), stored)
        return bool(ok), new_hash


def _normalise(password: str) -> str:
    # NIST SP 800-63B §5.1.1.2: apply Unicode normalisation (NFKC) before hashing.
    return unicodedata.normalize("NFKC", password)


@lru_cache(maxsize=1)
def _blocklist() -> frozenset[str]:
    text = resources.files("app.core").joinpath("data/common-passwords.txt").read_text("utf-8")
    return frozenset(line.strip().casefold() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def password_problems(password: str, *, min_length: int, context_words: tuple[str, ...] = ()) -> list[str]:
    """Why a new password is refused (empty: accepted). No composition rules (NIST)."""
    pw = _normalise(password)
    problems = []
    if len(pw) < min_length:
        problems.append(f"Use at least {min_length} characters.")
    if len(pw) > 128:
        problems.append("Use at most 128 characters.")
    folded = pw.casefold()
    if folded in _blocklist() or _is_trivial(folded):
        problems.append("This password is too common or too easy to guess.")
    for word in context_words:
        if word and len(word) >= 4 and word.casefold() in folded:
            problems.append("Do not use your ID number, phone number or name in the password.")
            break
    return problems


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
