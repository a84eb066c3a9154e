"""ASGI entry point for uvicorn: ``uvicorn app.asgi:app``."""

from app.core.config import load_settings_or_exit
from app.main import create_app

app = create_app(load_settings_or_exit())
