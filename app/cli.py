"""The `eid` command: serve, migrate, seed, import and administer."""

from __future__ import annotations

import asyncio
import base64
import getpass
import logging
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from app.core.config import Settings, load_settings_or_exit
from app.core.migrations import run_migrations

cli = typer.Typer(help="National e-ID service.", no_args_is_help=True, add_completion=False)
T = TypeVar("T")


def _run(fn: Callable[[Any], Awaitable[T]], settings: Settings | None = None) -> T:
    """Build the application context outside HTTP (app/core/deps.py) and run one coroutine with it."""
    from app.core.deps import build_context

    settings = settings or load_settings_or_exit()

    async def main() -> T:
        async with build_context(settings) as ctx:
            return await fn(ctx)

    return asyncio.run(main())


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to bind (0: any free port, with --demo).")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    log_level: Annotated[str | None, typer.Option(help="Log level (default: EID_LOG_LEVEL, else info).")] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Demo mode: throwaway database seeded from fixtures.")] = False,
    fixtures: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="Demo fixtures (YAML or JSON); default: built-in.")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(file_okay=False, help="Demo data directory (default: a new temporary one).")
    ] = None,
    issuer: Annotated[
        str | None, typer.Option(help="Demo issuer URL (default http://HOST:PORT), e.g. http://eid:9000 in compose.")
    ] = None,
) -> None:
    """Serve the HTTP API with uvicorn (or, with --demo, a self-contained demo instance)."""
    import uvicorn

    from app.core.observability import configure_logging
    from app.core.server import UVICORN_OPTIONS

    if demo:
        from app.demo.fixtures import FixturesInvalid, load_fixtures
        from app.demo.server import DemoRefused, fail, run_demo

        configure_logging("WARNING" if log_level in (None, "info") else log_level.upper())
        try:
            loaded, _ = load_fixtures(fixtures)
            run_demo(host=host, port=port, data=data, fixtures=loaded, issuer=issuer)
        except FixturesInvalid as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from None
        except (DemoRefused, OSError) as exc:
            fail(str(exc))
        return
    if fixtures or data or issuer:
        typer.echo("--fixtures, --data and --issuer go with --demo (otherwise set EID_ISSUER)", err=True)
        raise typer.Exit(2)
    settings = load_settings_or_exit()
    if workers > 1 and not _limits_are_shared(settings):
        typer.echo(
            "refusing --workers above 1 with EID_RATE_LIMITS=memory: each process would keep its own limits "
            "and let that many times the traffic through (use the database or Redis)",
            err=True,
        )
        raise typer.Exit(2)
    if log_level is not None:
        # The workers read it from the environment (app/asgi.py configures each of them).
        os.environ["EID_LOG_LEVEL"] = log_level.upper()
        settings = load_settings_or_exit()
    configure_logging(settings.log_level, settings.log_format_effective)
    made = _metrics_directory(workers)
    try:
        uvicorn.run(
            "app.asgi:app", host=host, port=port, workers=workers,
            timeout_graceful_shutdown=settings.shutdown_grace_seconds, **UVICORN_OPTIONS,
        )  # fmt: skip
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _metrics_directory(workers: int) -> Path | None:
    """Where the workers write their metrics for GET /metrics to add up (app/core/metrics.py),
    set in the environment before uvicorn starts them (prometheus-client reads it when it is
    imported; this process does not import it): ``PROMETHEUS_MULTIPROC_DIR`` when the operator
    set it, emptied of an earlier run's files, which would otherwise be added to this one's;
    else, with more than one worker, a new temporary directory, returned to be removed at exit;
    else none (one process: prometheus-client's default registry)."""
    given = os.environ.get(_MULTIPROC_ENV)
    made = None
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        for stale in Path(given).glob("*.db"):
            stale.unlink(missing_ok=True)
    elif workers > 1:
        made = Path(tempfile.mkdtemp(prefix="eid-metrics-"))
        os.environ[_MULTIPROC_ENV] = str(made)
    if _MULTIPROC_ENV in os.environ:
        logging.getLogger("eid.metrics").info("workers write their metrics in %s", os.environ[_MULTIPROC_ENV])
    return made


def _limits_are_shared(settings: Settings) -> bool:
    from app.core.config import RateLimitStore

    return settings.rate_limit_store is not RateLimitStore.memory


@cli.command()
def migrate(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply the Alembic migrations (the only way the schema changes)."""
    settings = load_settings_or_exit()
    run_migrations(settings, revision)
    typer.echo(f"database at {revision}")


@cli.command("seed-demo")
def seed_demo() -> None:
    """Load the default demo fixtures (registry, accounts, clients, documents, an officer):
    idempotent, refused in production. The same data as `eid serve --demo`."""
    from app.core.config import Environment
    from app.demo.fixtures import load_fixtures
    from app.demo.seed import seed_fixtures

    settings = load_settings_or_exit()
    if settings.env is Environment.production:
        typer.echo("refusing to load demo data when EID_ENV=production", err=True)
        raise typer.Exit(2)
    fixtures, _ = load_fixtures(None)

    async def go(ctx: Any) -> list[str]:
        async with ctx.sessionmaker() as session:
            return await seed_fixtures(session, ctx, fixtures, demo_keys=False)

    for line in _run(go):
        typer.echo(line)


@cli.command("import-registry")
def import_registry(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="CSV or JSON-lines file.")],
    fmt: Annotated[str | None, typer.Option("--format", help="csv or jsonl (default: from the file name).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=1_000_000, help="Records per transaction.")] = 10_000,
    rejects: Annotated[Path | None, typer.Option(help="Where rejected rows go (default FILE.rejects.csv).")] = None,
) -> None:
    """Import registry records: validated, batched, idempotent (upsert by ID number).

    The first row of an ID number is applied, later ones are rejected as duplicates; a guardian
    must be in the registry or in the file. Progress goes to stderr (a bar on a terminal, else a
    line every few seconds), the summary to stdout; neither shows an ID number or a phone.
    """
    import contextlib

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    from app.core.audit import Actor
    from app.core.privacy import scrub
    from app.registry import importer
    from app.registry.importer import HeaderError, ImportReport, ProgressFigures, ProgressReporter, detect_format

    fmt = detect_format(file, fmt)
    if fmt not in ("csv", "jsonl"):
        typer.echo("--format must be csv or jsonl", err=True)
        raise typer.Exit(2)
    rejects = rejects or file.with_name(file.name + ".rejects.csv")
    size = file.stat().st_size

    async def go(ctx: Any) -> ImportReport:
        with contextlib.ExitStack() as stack:
            fh = stack.enter_context(file.open("rb"))
            show: Callable[[ProgressFigures, int], None]
            if sys.stderr.isatty():
                bar = stack.enter_context(
                    Progress(
                        TextColumn("importing"),
                        BarColumn(),
                        TaskProgressColumn(),
                        TextColumn("{task.fields[figures]}"),
                        console=Console(stderr=True),
                        transient=True,
                    )
                )
                task = bar.add_task("import", total=size, figures="")

                def show(figures: ProgressFigures, position: int) -> None:
                    bar.update(task, completed=position, figures=figures.text())

                every = importer.PROGRESS_BAR_EVERY
            else:  # a log or a pipe: a plain line now and then, not a redrawn bar

                def show(figures: ProgressFigures, position: int) -> None:
                    typer.echo(figures.line(), err=True)

                every = importer.PROGRESS_LINE_EVERY
            return await importer.import_registry(
                ctx.settings,
                fh,
                fmt=fmt,
                rejects_path=rejects,
                actor=Actor("admin", "cli"),
                now=ctx.clock.now(),
                today=ctx.clock.today(),
                batch_size=batch_size,
                source_name=file.name,
                on_progress=ProgressReporter(show, fh.tell, size, every),
            )

    # Messages are scrubbed (app/core/privacy.py): no full ID number or phone reaches the terminal.
    try:
        report = _run(go)
    except HeaderError as exc:
        typer.echo(f"refused, nothing imported: {scrub(str(exc))}", err=True)
        raise typer.Exit(2) from None
    except Exception as exc:
        typer.echo(
            scrub(
                f"import stopped: {type(exc).__name__}: {exc}. Batches already committed stay, except their rows "
                "waiting for a guardian later in the file; re-run the same file to finish (nothing is applied twice)."
            ),
            err=True,
        )
        raise typer.Exit(1) from None
    typer.echo(
        f"{report.inserted} inserted, {report.updated} updated, {report.unchanged} unchanged, "
        f"{report.rejected} rejected in {report.batches} {'batch' if report.batches == 1 else 'batches'}"
    )
    if report.rejects_path:
        typer.echo(f"rejected rows: {report.rejects_path}")


@cli.command("create-officer")
def create_officer(
    username: Annotated[str, typer.Argument(help="Sign-in name.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    scope: Annotated[list[str], typer.Option("--scope", help="Scope to grant (repeat).")],
    password: Annotated[
        str | None, typer.Option(help="Password (prompted when absent).", envvar="EID_OFFICER_PASSWORD")
    ] = None,
) -> None:
    """Create an officer or administrator who signs in at POST /staff/token."""
    from app.admin.service import create_staff
    from app.core.errors import Problem
    from app.core.passwords import password_problems

    settings = load_settings_or_exit()
    password = password or getpass.getpass("password: ")
    problems = password_problems(password, min_length=settings.password_min_length, context_words=(username,))
    if problems:
        typer.echo("password refused: " + " ".join(problems), err=True)
        raise typer.Exit(2)

    async def go(ctx: Any) -> None:
        async with ctx.sessionmaker() as session:
            await create_staff(session, ctx, username=username, display_name=name, password=password, scopes=scope)

    try:
        _run(go)
    except Problem as exc:
        typer.echo(f"refused: {exc.detail or exc.title}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"officer {username} created with scopes: {' '.join(sorted(scope))}")


@cli.command("create-client")
def create_client(
    name: Annotated[str, typer.Argument(help="Display name shown on the consent page.")],
    kind: Annotated[str, typer.Option(help="portal, bank, agency or admin.")] = "portal",
    redirect_uri: Annotated[
        list[str] | None, typer.Option("--redirect-uri", help="Exact redirect URI (repeat).")
    ] = None,
    post_logout_redirect_uri: Annotated[
        list[str] | None, typer.Option("--post-logout-redirect-uri", help="Repeat.")
    ] = None,
    grant: Annotated[
        list[str] | None,
        typer.Option("--grant", help="authorization_code, refresh_token, client_credentials (repeat)."),
    ] = None,
    scope: Annotated[list[str] | None, typer.Option("--scope", help="Scope the client may get (repeat).")] = None,
    auth_method: Annotated[
        str, typer.Option(help="client_secret_basic, client_secret_post, private_key_jwt or none.")
    ] = "client_secret_basic",
    id_token_alg: Annotated[str, typer.Option(help="RS256 or ES256.")] = "RS256",
    jwks_file: Annotated[
        Path | None, typer.Option(help="JWK Set file with the client's public keys (private_key_jwt).")
    ] = None,
    jwks_uri: Annotated[
        str | None, typer.Option(help="Where the client publishes its JWK Set (private_key_jwt).")
    ] = None,
    backchannel_logout_uri: Annotated[str | None, typer.Option(help="Back-Channel Logout URI.")] = None,
    client_id: Annotated[str | None, typer.Option(help="Choose the client_id (default: generated).")] = None,
    introspect_any: Annotated[bool, typer.Option(help="May introspect tokens of other clients.")] = False,
    approve: Annotated[bool, typer.Option(help="Approve at once (qualified to connect).")] = False,
) -> None:
    """Register a relying party; prints its client_id and secret (shown once)."""
    import json

    from app.clients.service import create_client as register
    from app.core.audit import Actor
    from app.core.errors import Problem

    grants = grant or ["authorization_code", "refresh_token"]
    scopes = scope or ["openid", "profile"]
    jwks = json.loads(jwks_file.read_text()) if jwks_file else None

    async def go(ctx: Any) -> tuple[str, str | None]:
        async with ctx.sessionmaker() as session:
            client, secret = await register(
                session, ctx.keyring, name=name, kind=kind, redirect_uris=redirect_uri or [], grant_types=grants,
                scopes=scopes, auth_method=auth_method, id_token_alg=id_token_alg,
                post_logout_redirect_uris=post_logout_redirect_uri or [], jwks=jwks, jwks_uri=jwks_uri,
                backchannel_logout_uri=backchannel_logout_uri, can_introspect_any=introspect_any, approved=approve,
                client_id=client_id, actor=Actor("admin", "cli"), now=ctx.clock.now(),
            )  # fmt: skip
            return client.client_id, secret

    try:
        cid, secret = _run(go)
    except Problem as exc:
        typer.echo(f"refused: {exc.detail or exc.title}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"client_id: {cid}")
    if secret:
        typer.echo(f"client_secret: {secret}   (shown once; only a keyed hash is stored)")
    if not approve:
        typer.echo("status: pending (approve it with the admin API before it can connect)")


@cli.command("rotate-keys")
def rotate_keys() -> None:
    """Add new signing keys (published now, signing after EID_KEY_PUBLISH_LEAD_SECONDS) and
    schedule the old ones to leave JWKS once no token they signed can still be valid."""
    import datetime as dt

    from app.core.keys import rotate_keys as rotate

    async def go(ctx: Any) -> list[str]:
        s = ctx.settings
        async with ctx.sessionmaker() as session:
            keys = await rotate(
                session, ctx.keyring.sealer, ctx.clock.now(), lead=dt.timedelta(seconds=s.key_publish_lead_seconds),
                longest_jwt=dt.timedelta(seconds=max(s.access_token_ttl_seconds, s.id_token_ttl_seconds)),
            )  # fmt: skip
            return [f"{k.alg} {k.kid} signs from {k.activates_at.isoformat()}" for k in keys]

    for line in _run(go):
        typer.echo(line)


@cli.command("purge-expired")
def purge_expired() -> None:
    """Delete expired sessions, codes, tokens and challenges (run it daily; audit rows stay)."""
    from app.maintenance import purge_expired as purge

    async def go(ctx: Any) -> dict[str, int]:
        async with ctx.sessionmaker() as session:
            return await purge(session, ctx.clock.now())

    for table, count in _run(go).items():
        typer.echo(f"{table}: {count} deleted")


@cli.command()
def outbox(
    phone: Annotated[str | None, typer.Option(help="Only messages to this number (E.164).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    demo: Annotated[
        Path | None, typer.Option(file_okay=False, help="Read a running demo instance's outbox (its data_dir).")
    ] = None,
) -> None:
    """Show the newest SMS messages (development and demo only: bodies hold OTPs and passwords)."""
    from app.core.config import Environment
    from app.core.sms import read_outbox

    if demo is not None:
        from app.demo.server import MARKER, DemoRefused, demo_settings

        if not (demo / MARKER).exists():
            typer.echo(f"{demo} is not a demo data directory", err=True)
            raise typer.Exit(2)
        try:
            settings = demo_settings(demo, "127.0.0.1", 0)
        except DemoRefused as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from None
    else:
        settings = load_settings_or_exit()
    if settings.env is Environment.production:
        typer.echo("the outbox is not readable when EID_ENV=production", err=True)
        raise typer.Exit(2)

    async def go(ctx: Any) -> list[dict[str, str]]:
        async with ctx.sessionmaker() as session:
            return await read_outbox(session, ctx.keyring, phone=phone, limit=limit)

    for msg in _run(go, settings):
        typer.echo(f"{msg['created_at']}  {msg['phone']}  {msg['purpose']:<18} {msg['text']}")


@cli.command("demo-fixtures")
def demo_fixtures(
    schema: Annotated[bool, typer.Option("--schema", help="Print the JSON Schema of the format instead.")] = False,
    check: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="Validate this fixtures file and report every problem."),
    ] = None,
) -> None:
    """Print the default demo fixtures (or their JSON Schema, or check a file)."""
    import json

    from app.demo.fixtures import FixturesInvalid, default_fixtures_text, json_schema, load_fixtures

    if check is not None:
        try:
            fx, _ = load_fixtures(check)
        except FixturesInvalid as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from None
        typer.echo(f"{check}: {len(fx.citizens)} citizens, {len(fx.clients)} clients: valid")
        return
    typer.echo(json.dumps(json_schema(), indent=2, ensure_ascii=False) if schema else default_fixtures_text(), nl=False)


@cli.command("gen-secret")
def gen_secret() -> None:
    """Print a new random EID_SECRET_KEY."""
    typer.echo(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("="))


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)


if __name__ == "__main__":
    main()
