"""Schema changes, only through Alembic: the migrations directory and how to apply them."""

from __future__ import annotations

import functools
from pathlib import Path

from app.core.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def project_root() -> Path:
    """Where ``migrations/`` is: the working directory of a checkout, else the installed package's."""
    return next((d for d in (Path.cwd(), ROOT) if (d / "migrations" / "env.py").exists()), ROOT)


@functools.cache
def migration_head() -> str | None:
    """The revision this code's schema is at (the migrations' head)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    root = project_root()
    cfg = Config(str(root / "alembic.ini"))
    cfg.set_main_option("script_location", str(root / "migrations"))
    return ScriptDirectory.from_config(cfg).get_current_head()


def run_migrations(settings: Settings, revision: str = "head", *, downgrade: bool = False) -> None:
    from alembic import command
    from alembic.config import Config

    root = project_root()
    cfg = Config(str(root / "alembic.ini"))
    cfg.set_main_option("script_location", str(root / "migrations"))
    cfg.attributes["url"] = settings.database_url
    cfg.attributes["configure_logging"] = False
    if downgrade:
        command.downgrade(cfg, revision)
    else:
        command.upgrade(cfg, revision)
