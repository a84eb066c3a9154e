"""HTTP-level guards shared by the REST routers: JSON-only bodies and a body-size limit."""

from __future__ import annotations

import json
from typing import TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import InvalidInput, MalformedJson, UnsupportedMediaType, field_errors, problem_response

M = TypeVar("M", bound=BaseModel)


async def _require_json(request: Request) -> None:
    if request.method in ("POST", "PUT", "PATCH"):
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
        if has_body and ctype != "application/json":
            raise UnsupportedMediaType("This endpoint accepts application/json bodies only.")


json_body_only = Depends(_require_json)


async def json_body(request: Request, model: type[M]) -> M:
    """What FastAPI does for a body parameter, for hot routes that take the raw Request: JSON
    only, parsed and validated, with the same problem+json answers."""
    await _require_json(request)
    raw = await request.body()
    if not raw:
        raise InvalidInput(errors=[{"field": "body", "message": "Field required"}])
    try:
        # The standard parser, as FastAPI's: a lone surrogate escape parses, and the field
        # validators refuse it (422) as they do on every other route. UTF-8 only.
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # also integers over 4,300 digits, and deep nesting
        raise MalformedJson() from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(errors=field_errors(exc.errors())) from None


class NoNul:
    """Refuses, with 400, a request whose path or query string holds a NUL character (``%00``):
    no text the service stores may hold one (PostgreSQL refuses it, and it answered 500), and no
    legitimate parameter has one. Bodies are checked by their parsers: JSON bodies by
    app/core/schemas.py StrictModel, forms by app/oidc/endpoints.py read_form."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query: bytes = scope.get("query_string", b"")
            raw_path: bytes = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogateescape")
            if b"%00" in query or b"\x00" in query or b"%00" in raw_path or "\x00" in scope.get("path", ""):
                response = problem_response(400, "bad-request", "NUL characters are not allowed in a request")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodySizeLimit:
    """Refuses bodies over the limit with 413 before the app reads them, whether or not the
    client sent Content-Length (chunked bodies are counted as they stream)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = True
                if too_big:
                    await self._refuse(scope, receive, send)
                    return
        if not any(name == b"content-length" for name, _ in scope.get("headers", [])):
            # A streamed (chunked) body: read it here, up to the limit, then replay it.
            chunks: list[bytes] = []
            size = 0
            more = True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    break
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_bytes:
                    await self._refuse(scope, receive, send)
                    return
                chunks.append(chunk)
                more = message.get("more_body", False)
            body = b"".join(chunks)
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, send)
            return
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(413, "payload-too-large", "The request body is too large")
        await response(scope, receive, send)
