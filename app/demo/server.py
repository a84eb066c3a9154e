"""`eid serve --demo`: the real app on a throwaway SQLite database, migrated and seeded from
fixtures, on a port of your choice (0: any free one), announced as one JSON line."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from app.core.config import Environment, RateLimitStore, Settings, SubscriberCheckKind
from app.demo.fixtures import Fixtures
from app.demo.seed import DEMO_SECRET

MARKER = ".eid-demo"
SUBSCRIBERS = "subscribers.json"


class DemoRefused(Exception):
    pass


def prepare_data_dir(data: Path | None) -> tuple[Path, bool]:
    """(directory, created by us). A given directory must be empty or a former demo's."""
    if data is None:
        return Path(tempfile.mkdtemp(prefix="eid-demo-")), True
    data.mkdir(parents=True, exist_ok=True)
    if any(data.iterdir()) and not (data / MARKER).exists():
        raise DemoRefused(f"{data} is not empty and not a demo data directory: refusing to touch it")
    # A fresh database per run: demo data is throwaway by design.
    for name in ("eid.db", "eid.db-wal", "eid.db-shm"):
        (data / name).unlink(missing_ok=True)
    return data, False


def demo_settings(data_dir: Path, host: str, port: int, issuer: str | None = None) -> Settings:
    if os.environ.get("EID_ENV", "").lower() == Environment.production.value:
        raise DemoRefused("refusing demo mode with EID_ENV=production")
    if os.environ.get("EID_DATABASE_URL"):
        raise DemoRefused("demo mode uses its own temporary SQLite database; unset EID_DATABASE_URL")
    return Settings(
        env=Environment.development,
        demo=True,
        database_url=f"sqlite+aiosqlite:///{data_dir / 'eid.db'}",
        data_dir=data_dir,
        issuer=issuer or f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}",  # noqa: S104
        secret_key=DEMO_SECRET,
        redis_url=None,
        # Demo passwords need no protection against offline cracking: keep start-up and sign-in fast.
        argon2_memory_kib=1024,
        argon2_time_cost=1,
        password_min_length=8,
        key_publish_lead_seconds=0,
        # Relaxed so that a portal's test suite can run the flows many times (README, demo mode).
        registration_rate_per_hour=100_000,
        client_rate_per_minute=1_000_000,
        signin_rate_per_hour=100_000,
        notify_sms_per_hour=1000,
        # One process: the limits can live in its memory.
        rate_limits=RateLimitStore.memory,
        # The fixtures' operator_phones stand in for the mobile operators' subscriber registry.
        subscriber_check=SubscriberCheckKind.fake,
        subscriber_fake_file=data_dir / SUBSCRIBERS,
    )


def write_subscribers(data_dir: Path, fixtures: Fixtures) -> None:
    from app.core.schemas import normalise_phone

    pairs = {
        c.id_number: [normalise_phone(p) for p in c.operator_phones] for c in fixtures.citizens if c.operator_phones
    }
    (data_dir / SUBSCRIBERS).write_text(json.dumps(pairs), "utf-8")


def run_demo(*, host: str, port: int, data: Path | None, fixtures: Fixtures, issuer: str | None = None) -> None:
    import uvicorn

    from app.core.migrations import run_migrations
    from app.core.server import UVICORN_OPTIONS

    _Server = _server_class()
    from app.core.clock import Clock
    from app.core.deps import build_context
    from app.demo.seed import seed_fixtures
    from app.main import create_app

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    port = sock.getsockname()[1]
    data_dir, ours = prepare_data_dir(data)
    try:
        (data_dir / MARKER).write_text("created by eid serve --demo\n")
        settings = demo_settings(data_dir, host, port, issuer)
        write_subscribers(data_dir, fixtures)
        _migrated_database(settings, data_dir / "eid.db", run_migrations)
        clock = Clock()

        async def seed() -> None:
            async with build_context(settings, clock=clock) as ctx, ctx.sessionmaker() as session:
                await seed_fixtures(session, ctx, fixtures)

        asyncio.run(seed())
        print(
            json.dumps(
                {"issuer": settings.issuer, "port": port, "pid": os.getpid(), "data_dir": str(data_dir), "demo": True}
            ),
            flush=True,
        )
        app = create_app(settings, clock=clock)
        server = _Server(uvicorn.Config(app, lifespan="on", **UVICORN_OPTIONS))
        server.run(sockets=[sock])
    finally:
        sock.close()
        if ours:
            shutil.rmtree(data_dir, ignore_errors=True)


def _schema_key() -> str:
    """Changes whenever a migration file does: names, sizes and contents' hash."""
    from app.core.migrations import project_root

    root = project_root()
    digest = hashlib.sha256()
    for path in sorted((root / "migrations" / "versions").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _migrated_database(settings: Settings, db: Path, migrate: Callable[[Settings], None]) -> None:
    """Migrate a fresh demo database, or copy one migrated before by the same migrations
    (kept in the user's cache directory): start-up is then a file copy, not a run of every migration."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "eid"
    template = cache / f"demo-schema-{_schema_key()}.db"
    if template.exists():
        shutil.copyfile(template, db)
        return
    migrate(settings)
    with contextlib.closing(sqlite3.connect(db)) as conn:  # everything into the main file first
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with contextlib.suppress(OSError):
        cache.mkdir(parents=True, exist_ok=True)
        partial = template.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(db, partial)
        partial.replace(template)


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn re-raises SIGTERM/SIGINT after shutting down, which would kill the process
            # before the temporary data directory is removed; exit normally instead.
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self.handle_exit)
            yield

    return Server


def fail(message: str) -> None:
    print(f"eid serve --demo: {message}", file=sys.stderr)
    raise SystemExit(2)
