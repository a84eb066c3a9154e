"""Is an access token still good? Access tokens are JWTs, so the signature and expiry are
checked offline; what needs the database is revocation (of the token, of its grant, or of the
account behind it).

On PostgreSQL the answer "still live" is remembered per process, and forgotten whenever
anything is revoked: triggers (migration 0008) send ``NOTIFY eid_revocation`` on every
revocation, grant revocation and account status change, and each process LISTENs on one
connection and clears its cache. Revocations reach every replica within the NOTIFY round trip
(milliseconds); a process also clears its own cache when it commits such a change itself. While
the listening connection is down the cache is not used at all, and entries expire after
``MAX_AGE`` seconds whatever happens. A miss costs one query on a raw asyncpg pool (one
autocommit statement, no reset query on release: ~90 µs of CPU instead of ~300 µs through an
AsyncSession, bench/token.py). SQLite (one process) asks the database every time.

Verified token signatures are remembered (bounded, per process): the signature of a given
token never changes, so only expiry and key retirement are checked again on a hit.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from sqlalchemy import Uuid, bindparam, event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.db import REVOKES, raw_fetchrow
from app.core.metrics import CacheCounters

log = logging.getLogger("eid.livecheck")
CHANNEL = "eid_revocation"
MAX_AGE = 60.0

_SQL = (
    "SELECT (SELECT count(*) FROM oauth_revoked_tokens WHERE jti = {jti}) AS revoked,"
    " (SELECT count(*) FROM oauth_grants g JOIN accounts a ON a.id = g.account_id"
    "  WHERE g.id = {gid} AND g.revoked_at IS NULL AND a.status = 'active') AS grant_ok"
)
_SQLA_QUERY = text(_SQL.format(jti=":jti", gid=":gid")).bindparams(bindparam("gid", type_=Uuid()))
_PG_QUERY = _SQL.format(jti="$1", gid="$2::uuid")


class LiveCheck:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], dsn: str | None, pool: Any) -> None:
        """``dsn`` and ``pool`` (the raw asyncpg pool) on PostgreSQL; None on SQLite."""
        self._sessionmaker = sessionmaker
        self._dsn = dsn
        self._pool = pool
        self._listener: Any = None
        self._listening = False
        self._live: dict[tuple[str, uuid.UUID | None], float] = {}
        self._reconnect: asyncio.Task[None] | None = None
        self._closing = False
        # A miss is a query: also every call while the cache is not in use (SQLite, no listener).
        self._counted = CacheCounters("live_tokens")

    @property
    def caching(self) -> bool:
        return self._listening

    async def start(self, engine: AsyncEngine) -> None:
        if self._dsn is None:
            return
        self._watch_own_commits(engine)
        await self._listen()

    async def _listen(self) -> None:
        import asyncpg

        try:
            conn = await asyncpg.connect(self._dsn)
            await conn.add_listener(CHANNEL, self._on_notify)
            conn.add_termination_listener(self._on_lost)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("revocation listener unavailable (%s): asking the database every time", type(exc).__name__)
            self._schedule_reconnect()
            return
        self._listener = conn
        self.forget()
        self._listening = True

    def _on_notify(self, *_args: Any) -> None:
        self.forget()

    def _on_lost(self, *_args: Any) -> None:
        self._listening = False
        self.forget()
        self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        if self._closing or (self._reconnect is not None and not self._reconnect.done()):
            return

        async def again() -> None:
            await asyncio.sleep(1.0)
            await self._listen()

        self._reconnect = asyncio.get_running_loop().create_task(again())

    def _watch_own_commits(self, engine: AsyncEngine) -> None:
        """This process's own revocations (note_revocation) are forgotten at their commit, before
        its NOTIFY comes back."""

        def after_commit(conn: Any) -> None:
            if conn.info.pop(REVOKES, False):
                self.forget()

        def after_rollback(conn: Any) -> None:
            # A lost connection's info goes with it; reading it would raise (PendingRollbackError)
            # in the middle of the rollback and turn a 503 into a 500.
            if not conn.invalidated:
                conn.info.pop(REVOKES, None)

        event.listen(engine.sync_engine, "commit", after_commit)
        event.listen(engine.sync_engine, "rollback", after_rollback)

    def forget(self) -> None:
        self._live.clear()

    async def close(self) -> None:
        self._closing = True
        if self._reconnect is not None:
            self._reconnect.cancel()
        self._listening = False
        if self._listener is not None:
            await self._listener.close()

    async def is_live(self, jti: str, grant_id: uuid.UUID | None) -> bool:
        key = (jti, grant_id)
        if self._listening:
            seen = self._live.get(key)
            if seen is not None and time.monotonic() - seen < MAX_AGE:
                self._counted.hit.inc()
                return True
        self._counted.miss.inc()
        if self._pool is not None:
            row = await raw_fetchrow(self._pool, _PG_QUERY, jti, grant_id)
        else:
            async with self._sessionmaker() as session:
                row = (await session.execute(_SQLA_QUERY, {"jti": jti, "gid": grant_id})).one()
        live = bool(row[0] == 0 and (grant_id is None or row[1] == 1))
        if live and self._listening:
            if len(self._live) > 100_000:
                self._live.clear()
            self._live[key] = time.monotonic()
        return live


class VerifiedTokens:
    """token → claims of tokens whose signature verified; bounded, cleared when full."""

    def __init__(self, max_entries: int = 20_000) -> None:
        self._max = max_entries
        self._entries: dict[str, tuple[str, dict[str, Any]]] = {}
        self._counted = CacheCounters("verified_tokens")

    def get(self, token: str) -> tuple[str, dict[str, Any]] | None:
        found = self._entries.get(token)
        (self._counted.miss if found is None else self._counted.hit).inc()
        return found

    def put(self, token: str, kid: str, claims: dict[str, Any]) -> None:
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[token] = (kid, claims)
