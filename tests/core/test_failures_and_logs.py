"""A failure no handler answered (app/core/observability.py RequestContext): 503 when a
dependency is unavailable, 500 otherwise, each saying what is true of the request's writes, each
logged once, with the route template and the request ID; and the log lines never hold an ID
number or a phone, exceptions and tracebacks included, in the text and the JSON format.

The routes here run on the suite's real database (SQLite and PostgreSQL): a write commits, then
the failure comes, as when a connection is lost between a commit and the answer's read."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from sqlalchemy import text

from app.core.errors import install_error_handlers
from app.core.hotpath import hot, serve_hot_routes
from app.core.observability import RequestContext, configure_logging
from app.core.privacy import scrub
from tests.support import Harness

ID_NUMBER = "001090123456"
PHONES = ("+84912345678", "0912345678", "84912345678")
SECRET_TEXT = f"citizen {ID_NUMBER} phone {PHONES[0]} or {PHONES[1]} or {PHONES[2]}"


def failing_app(env: Harness) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(RequestContext)
    maker = env.ctx.sessionmaker

    async def write(marker: str) -> None:
        async with maker() as session:
            await session.execute(
                text('INSERT INTO rate_limits (key, "window", count, expires_at) VALUES (:k, 0, 1, :e)'),
                {"k": marker, "e": env.ctx.clock.now()},
            )
            await session.commit()

    @app.post("/things/{thing_id}")
    async def fail(thing_id: str, request: Request) -> dict[str, str]:
        how = request.query_params["how"]
        if request.query_params.get("commit") == "yes":
            await write(thing_id)
        if how == "db-down":
            raise ConnectionRefusedError(111, SECRET_TEXT)
        raise RuntimeError(SECRET_TEXT)

    @app.post("/hot-things")
    @hot()
    async def hot_fail(request: Request) -> Any:
        raise ConnectionResetError(SECRET_TEXT)

    serve_hot_routes(app)
    return app


@pytest.fixture(params=["text", "json"])
def log_output(request: pytest.FixtureRequest) -> Iterator[tuple[str, io.StringIO]]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("INFO", request.param, stream=stream)
    yield request.param, stream
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


async def call(env: Harness, method: str, path: str, **kw: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=failing_app(env), raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(method, path, **kw)


async def marker_written(env: Harness, marker: str) -> bool:
    return await env.count("rate_limits", "key = :k", k=marker) == 1


async def test_a_lost_dependency_answers_503_with_retry_after_and_nothing_done(env: Harness) -> None:
    marker = f"t-{uuid.uuid4()}"
    resp = await call(env, "POST", f"/things/{marker}?how=db-down")
    assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
    assert resp.json()["type"] == "urn:eid:problem:unavailable"
    assert "nothing was done" in resp.json()["title"]
    assert SECRET_TEXT not in resp.text and not await marker_written(env, marker)


async def test_after_a_commit_the_answer_never_says_nothing_was_changed(env: Harness) -> None:
    marker = f"t-{uuid.uuid4()}"
    resp = await call(env, "POST", f"/things/{marker}?how=db-down&commit=yes")
    assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
    assert "nothing" not in resp.text and "was saved" in resp.json()["detail"]
    assert await marker_written(env, marker)

    marker = f"t-{uuid.uuid4()}"
    resp = await call(env, "POST", f"/things/{marker}?how=bug&commit=yes")
    assert resp.status_code == 500 and resp.json()["type"] == "urn:eid:problem:internal"
    assert "nothing" not in resp.text and "was saved" in resp.json()["detail"]
    assert await marker_written(env, marker)

    resp = await call(env, "POST", f"/things/{uuid.uuid4()}?how=bug")
    assert resp.status_code == 500 and "nothing was changed" in resp.json()["detail"]


async def test_a_hot_route_fails_the_same_way(env: Harness) -> None:
    resp = await call(env, "POST", "/hot-things")
    assert resp.status_code == 503 and resp.json()["type"] == "urn:eid:problem:unavailable"


async def test_each_failure_is_one_line_with_route_and_request_id_and_no_personal_data(
    env: Harness, log_output: tuple[str, io.StringIO]
) -> None:
    fmt, stream = log_output
    resp = await call(env, "POST", f"/things/{ID_NUMBER}?how=bug", headers={"X-Request-ID": "bank-req-42"})
    assert resp.status_code == 500 and resp.headers["x-request-id"] == "bank-req-42"
    down = await call(env, "POST", "/hot-things")
    assert down.status_code == 503
    out = stream.getvalue()
    assert ID_NUMBER not in out and not any(p in out for p in PHONES), out
    assert "001*******56" in out  # the traceback is there, masked
    if fmt == "json":
        records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        failed = [r for r in records if r.get("request_id") == "bank-req-42"]
        assert len(failed) == 1, records
        line = failed[0]
        assert (line["level"], line["route"], line["status"], line["exc_type"]) == (
            "error", "/things/{thing_id}", 500, "RuntimeError",
        )  # fmt: skip
        assert "Traceback" in line["exception"] and "time" in line and line["logger"] == "eid.access"
        hot_line = [r for r in records if r.get("route") == "/hot-things"]
        assert len(hot_line) == 1 and hot_line[0]["level"] == "warning" and hot_line[0]["status"] == 503
        assert hot_line[0]["exc_type"] == "ConnectionResetError" and "exception" not in hot_line[0]
    else:
        starts = [line for line in out.splitlines() if "eid.access" in line]
        assert len([s for s in starts if "rid=bank-req-42" in s]) == 1, out
        assert "POST /things/{thing_id} 500" in out and "unhandled RuntimeError" in out
        assert out.count("Traceback") == 1


async def test_request_ids_are_never_altered(env: Harness, log_output: tuple[str, io.StringIO]) -> None:
    _, stream = log_output
    # One the service made, whatever digits it holds, is logged exactly as answered.
    resp = await call(env, "POST", "/hot-things")
    rid = resp.headers["x-request-id"]
    assert rid in stream.getvalue()
    # One a client offers is taken as is, or (when the log would have to mask it: it looks
    # like an ID number or a phone) replaced, never masked.
    for offered in ("portal-7f3a", "trace.2026-12-04.1", f"req-{ID_NUMBER}", "0912345678"):
        resp = await call(env, "POST", "/hot-things", headers={"X-Request-ID": offered})
        rid = resp.headers["x-request-id"]
        assert rid == offered if scrub(offered) == offered else rid != offered
        assert rid in stream.getvalue()
    assert ID_NUMBER not in stream.getvalue()


def test_phones_in_every_written_form_are_masked() -> None:
    assert scrub("call 0912345678 or 84912345678 or +84912345678") == ("call 09*****678 or 849*****678 or +84******678")
    assert scrub("order 0123456789") == "order 0123456789"  # 01x is not a mobile prefix
    assert scrub("ts 20261204183000") == "ts 20261204183000"
