"""Print the app's OpenAPI document (``make openapi`` writes it to openapi/openapi.json)."""

from __future__ import annotations

import json
import sys
from typing import Any

from app.core.config import Settings
from app.main import create_app


def openapi_document() -> dict[str, Any]:
    # The schema does not depend on the deployment: build it from default settings.
    return create_app(Settings()).openapi()


def render() -> str:
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
