"""Request IDs, the one log line per request, the answer to a failure, and how every process
logs.

Each request gets one ``eid.access`` line: method, route template (never the raw path, which
can hold an ID number), status, duration, request ID, client and subject. A failure no handler
answered is folded into that same line (level ERROR with the scrubbed traceback for a 500,
WARNING for a 503), so each failure is logged once; the client gets 503 ``unavailable`` when a
dependency was down (app/core/errors.py is_unavailable) and 500 otherwise, and its connection
stays open (the exception is answered here, not passed up to the server, which would log it
again and close the connection).

Logs never hold a password, OTP, token, full ID number or phone: the messages, exception texts
and tracebacks of every logger are scrubbed (app/core/privacy.py ScrubFilter). Request IDs are
never altered: they are written beside the scrubbed text, and one offered by a client
(``X-Request-ID``) is taken only when it holds nothing the scrubber would mask.

``EID_LOG_FORMAT=json`` writes one JSON object per line (the default with EID_ENV=production),
``text`` a readable line. uvicorn's worker processes configure logging the same way as the
parent: app/asgi.py calls configure_logging in each.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
import os
import re
import secrets
import sys
import time
from typing import IO, Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.context import RequestState, request_id_var, request_state_var
from app.core.errors import failure_response, is_unavailable, problem_response
from app.core.privacy import ScrubFilter, scrub

access_log = logging.getLogger("eid.access")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

# Request IDs need to be unique, not secret: a random prefix per process and a counter (no
# system call per request: docs/facts.md §5).
_ID_PREFIX = secrets.token_hex(8)
_ID_COUNTER = itertools.count(1)


def _reseed_request_ids() -> None:
    global _ID_PREFIX, _ID_COUNTER
    _ID_PREFIX, _ID_COUNTER = secrets.token_hex(8), itertools.count(1)


os.register_at_fork(after_in_child=_reseed_request_ids)


def _new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            offered: str = value.decode("latin-1")
            # Taken as offered, or not at all: a request ID is never altered, so one that looks
            # like an ID number or a phone (which the log would have to mask) is replaced.
            if _SAFE_ID.match(offered) and scrub(offered) == offered:
                return offered
            break
    return _new_request_id()


def route_template(scope: Scope) -> str:
    """The matched route's template (``/registry/citizens/{id_number}``), or ``-``."""
    path = getattr(scope.get("route"), "path", None)
    return str(path) if isinstance(path, str) else "-"


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        state = RequestState(request_id)
        id_token = request_id_var.set(request_id)
        state_token = request_state_var.set(state)
        started = time.perf_counter()
        status = 0
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        failure: BaseException | None = None
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            failure = exc
            if status == 0:
                with contextlib.suppress(OSError):  # the client went away
                    await failure_response(exc, committed=state.committed)(scope, receive, send_with_id)
        except asyncio.CancelledError as exc:
            # The server cancels what is still running when EID_SHUTDOWN_GRACE_SECONDS is up
            # (nothing else cancels a request). Answer 503 so that the client retries elsewhere,
            # rather than the server's bare 500, and let the request end here.
            failure = exc
            if status == 0:
                with contextlib.suppress(OSError):
                    await SHUTTING_DOWN(scope, receive, send_with_id)
        finally:
            _log_request(scope, state, status, time.perf_counter() - started, failure)
            request_state_var.reset(state_token)
            request_id_var.reset(id_token)


SHUTTING_DOWN = problem_response(
    503, "unavailable", "The server is shutting down; retry", headers={"Retry-After": "1", "Connection": "close"}
)


def _log_request(scope: Scope, state: RequestState, status: int, seconds: float, failure: BaseException | None) -> None:
    route = route_template(scope)
    fields = {
        "request_id": state.request_id,
        "route": route,
        "method": scope["method"],
        "status": status,
        "duration_ms": round(seconds * 1000, 1),
        "client_id": state.client_id,
        "subject": state.subject,
    }
    if failure is None:
        access_log.info("%s %s %d %.1fms", scope["method"], route, status, seconds * 1000, extra=fields)
        return
    fields["exc_type"] = type(failure).__name__
    if isinstance(failure, asyncio.CancelledError):
        access_log.warning(
            "%s %s %d %.1fms: cut off at shutdown", scope["method"], route, status, seconds * 1000, extra=fields
        )
    elif is_unavailable(failure):
        access_log.warning(
            "%s %s %d %.1fms: unavailable (%s)", scope["method"], route, status, seconds * 1000,
            type(failure).__name__, extra=fields,
        )  # fmt: skip
    else:
        access_log.error(
            "%s %s %d %.1fms: unhandled %s", scope["method"], route, status, seconds * 1000,
            type(failure).__name__, extra=fields, exc_info=failure,
        )  # fmt: skip


# The fields a record may carry (set by _log_request, or by ContextFields from the request).
_FIELDS = ("request_id", "route", "method", "status", "duration_ms", "client_id", "subject", "exc_type")


class ContextFields(logging.Filter):
    """Every record logged during a request carries its request ID."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        return True


class TextFormatter(logging.Formatter):
    """``time level logger message key=value…``, the context fields after the message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        rid = getattr(record, "request_id", None)
        client = getattr(record, "client_id", None)
        subject = getattr(record, "subject", None)
        extra = [f"rid={rid}" if rid else "", f"client={client}" if client else "", f"sub={subject}" if subject else ""]
        return " ".join([line, *filter(None, extra)])


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, RFC 3339), level, logger, message, the context
    fields that are set, and the scrubbed exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub(self.formatException(record.exc_info))
        if record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return orjson.dumps(out, default=str).decode()


def configure_logging(level: str = "INFO", fmt: str = "text", stream: IO[str] | None = None) -> None:
    """How every process of the service logs (the CLI, the server, each uvicorn worker): to
    ``stream``, standard error by default."""
    # Nothing we log shows the thread, process or source line: do not collect them for every
    # record (the Logging HOWTO's "Optimization"; the source line costs a stack walk).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ScrubFilter())
    handler.addFilter(ContextFields())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # a line per plugin, at start
