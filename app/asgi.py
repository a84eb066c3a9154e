"""ASGI entry point for uvicorn: ``uvicorn app.asgi:app``.

Every process that imports it (the one process, or each of ``--workers N``) configures logging
the same way before the app is built: uvicorn's workers are new interpreters that inherit
nothing of the parent's configuration.
"""

from app.core.config import load_settings_or_exit
from app.core.observability import configure_logging
from app.main import create_app

settings = load_settings_or_exit()
configure_logging(settings.log_level, settings.log_format_effective)
app = create_app(settings)
