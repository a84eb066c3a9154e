"""Error types and the one place that turns them into HTTP answers.

REST endpoints answer RFC 9457 problem details (``application/problem+json``) with a stable
``type`` URN per problem kind; services raise these types and never build responses.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from typing import Any, ClassVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.core.db import UnstorableText

log = logging.getLogger("eid.errors")

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:eid:problem:"


def problem_response(
    status: int,
    slug: str,
    title: str,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body: dict[str, Any] = {"type": TYPE_PREFIX + slug, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers)


class Problem(Exception):
    """Base of every domain error a client may see. Subclasses set the class attributes."""

    status: ClassVar[int] = 400
    slug: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad request"

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = headers
        self.extra = extra

    def to_response(self) -> Response:
        return problem_response(self.status, self.slug, self.title, self.detail, self.headers, **self.extra)


class NotFound(Problem):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(Problem):
    status, slug, title = 409, "conflict", "Conflict with the current state"


class InvalidState(Problem):
    status, slug, title = 409, "invalid-state", "Not allowed in the current state"


class Unauthenticated(Problem):
    status, slug, title = 401, "unauthenticated", "Authentication required"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="eid"'}, **extra)


class Forbidden(Problem):
    status, slug, title = 403, "forbidden", "Not allowed for this caller"


class RateLimited(Problem):
    status, slug, title = 429, "rate-limited", "Too many requests"

    def __init__(self, retry_after: int) -> None:
        super().__init__("Try again later.", headers={"Retry-After": str(retry_after)})


class InvalidInput(Problem):
    status, slug, title = 422, "validation", "The request has invalid fields"


class ServiceUnavailable(Problem):
    status, slug, title = 503, "unavailable", "Temporarily unavailable; nothing was done, retry later"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": "1"})


class MalformedJson(Problem):
    status, slug, title = 400, "malformed-json", "The body is not valid JSON (UTF-8)"


class UnsupportedMediaType(Problem):
    status, slug, title = 415, "unsupported-media-type", "Send application/json"


class PayloadTooLarge(Problem):
    status, slug, title = 413, "payload-too-large", "The request body is too large"


class OAuthError(Exception):
    """RFC 6749 §5.2 / RFC 6750 §3.1 / OIDC Core §3.1.2.6 errors: ``{"error", "error_description"}``."""

    def __init__(
        self, error: str, description: str | None = None, *, status: int = 400, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description
        self.status = status
        self.headers = headers or {}

    def to_response(self) -> Response:
        body: dict[str, str] = {"error": self.error}
        if self.description:
            body["error_description"] = self.description
        headers = {"Cache-Control": "no-store", "Pragma": "no-cache", **self.headers}
        return Response(orjson.dumps(body), status_code=self.status, media_type="application/json", headers=headers)


# How the OpenAPI document describes OAuth errors (RFC 6749 §5.2, RFC 6750 §3.1).
OAUTH_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
}


def oauth_error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of an OAuth endpoint: its errors are JSON ``{"error", ...}`` objects."""
    content = {"application/json": {"schema": OAUTH_ERROR_SCHEMA}}
    return {
        status: {"description": "OAuth 2.0 error (RFC 6749 §5.2, RFC 6750 §3.1)", "content": content}
        for status in statuses
    }


def page_responses(*, redirects: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a browser endpoint: HTML pages, redirects, and an OAuth error for a
    request it cannot read at all (a body that is not a form)."""
    return {
        200: {"description": "A page", "content": {"text/html": {"schema": {"type": "string"}}}},
        303: {"description": redirects},
        400: {
            "description": "An error page, or an OAuth error when the body is not a form",
            "content": {
                "text/html": {"schema": {"type": "string"}},
                "application/json": {"schema": OAUTH_ERROR_SCHEMA},
            },
        },
        403: {"description": "An error page", "content": {"text/html": {"schema": {"type": "string"}}}},
    }


def invalid_client(description: str = "Client authentication failed.", scheme: str = "Basic") -> OAuthError:
    # RFC 6749 §5.2: 401 with WWW-Authenticate for the scheme the client tried.
    return OAuthError("invalid_client", description, status=401, headers={"WWW-Authenticate": f'{scheme} realm="eid"'})


def invalid_token(description: str = "The access token is invalid, expired or revoked.") -> OAuthError:
    # RFC 6750 §3.1.
    return OAuthError(
        "invalid_token", description, status=401,
        headers={"WWW-Authenticate": f'Bearer realm="eid", error="invalid_token", error_description="{description}"'},
    )  # fmt: skip


async def _oauth_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OAuthError)
    return exc.to_response()


def field_errors(errors: Sequence[Any]) -> list[dict[str, str]]:
    fields = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        # Never echo the input back: it may be a password or an ID number.
        fields.append({"field": ".".join(loc) or "body", "message": str(err.get("msg", "invalid"))})
    return fields


async def _validation_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return problem_response(400, "malformed-json", "The body is not valid JSON (UTF-8)")
    return problem_response(422, "validation", "The request has invalid fields", errors=field_errors(errors))


async def _problem_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return exc.to_response()


_HTTP_SLUGS = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large", 415: "unsupported-media-type"}


async def _http_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    slug = _HTTP_SLUGS.get(exc.status_code, "http-error")
    title = str(exc.detail) if isinstance(exc.detail, str) else "HTTP error"
    return problem_response(exc.status_code, slug, title, headers=getattr(exc, "headers", None))


async def _pool_busy_handler(request: Request, _exc: Exception) -> Response:
    # Every database connection of this process stayed in use for EID_DATABASE_POOL_TIMEOUT_SECONDS.
    log.warning(
        "no database connection free on %s %s: answered 503",
        request.method,
        getattr(request.scope.get("route"), "path", "-"),
    )
    return ServiceUnavailable("The service is busy.").to_response()


# What a lost or unreachable dependency raises, at whatever layer it surfaces (a dependency,
# middleware, a hot route, a route): the request can be retried, so it answers 503.
def _unavailable_types() -> tuple[type[BaseException], ...]:
    import asyncpg
    from redis import exceptions as redis_errors
    from sqlalchemy import exc as sa

    return (
        sa.OperationalError,  # connection refused or lost, server shutting down, database locked
        sa.InterfaceError,  # the driver's connection is closed
        sa.DisconnectionError,
        sa.TimeoutError,  # no pooled connection free within EID_DATABASE_POOL_TIMEOUT_SECONDS
        asyncpg.PostgresConnectionError,
        asyncpg.exceptions.ConnectionDoesNotExistError,
        asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now, query canceled
        asyncpg.exceptions.InsufficientResourcesError,  # too many connections, out of memory or disk
        asyncpg.InternalClientError,  # a connection left mid-operation by a lost round trip
        redis_errors.ConnectionError,
        redis_errors.TimeoutError,
        ConnectionError,  # refused, reset, aborted, broken pipe
        TimeoutError,
        socket.gaierror,
    )


_UNAVAILABLE: tuple[type[BaseException], ...] | None = None


def is_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` (or what it wraps) says a dependency is down or the connection to it was
    lost: the database, Redis, a gateway. Not for errors the request itself caused."""
    global _UNAVAILABLE
    if _UNAVAILABLE is None:
        _UNAVAILABLE = _unavailable_types()
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 5:
        if isinstance(current, _UNAVAILABLE):
            return True
        if getattr(current, "connection_invalidated", False):  # SQLAlchemy's DBAPIError
            return True
        if type(current).__name__ == "InterfaceError" and "closed" in str(current):
            return True  # asyncpg: "connection is closed", "the underlying connection is closed"
        current = getattr(current, "orig", None) or current.__cause__
        seen += 1
    return False


def failure_response(exc: BaseException, *, committed: bool) -> Response:
    """The answer to an exception nothing else handled: 503 when a dependency is unavailable,
    else 500. Either way it says what is true of the request's writes: a change that committed
    before the failure is not reported as "nothing was changed"."""
    if is_unavailable(exc):
        if committed:
            return problem_response(
                503, "unavailable", "Temporarily unavailable",
                "The change was saved, but the answer could not be completed; read the result before retrying.",
                headers={"Retry-After": "1"},
            )  # fmt: skip
        return ServiceUnavailable().to_response()
    detail = (
        "The error was logged. The change was saved before the failure; read the result before retrying."
        if committed
        else "The error was logged; nothing was changed."
    )
    return problem_response(500, "internal", "Internal error", detail)


async def _unstorable_handler(_request: Request, _exc: Exception) -> Response:
    return problem_response(400, "bad-request", "NUL characters are not allowed in a request")


async def _unhandled_handler(request: Request, exc: Exception) -> Response:
    # Reached only if app/core/observability.py RequestContext (which answers every failure
    # itself, once, and keeps the connection open) is not in the stack.
    log.error("unhandled %s on %s", type(exc).__name__, request.method)
    return failure_response(exc, committed=False)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(Problem, _problem_handler)
    app.add_exception_handler(OAuthError, _oauth_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(PoolTimeout, _pool_busy_handler)
    app.add_exception_handler(UnstorableText, _unstorable_handler)
    app.add_exception_handler(Exception, _unhandled_handler)
