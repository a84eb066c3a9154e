"""What the relying-party registry can refuse."""

from __future__ import annotations

from app.core.errors import NotFound


class ClientNotFound(NotFound):
    slug, title = "client-not-found", "No client has this ID"
