"""Hot routes (app/core/hotpath.py) skip FastAPI's per-request layers but not the app's own
middleware or exception handlers: their answers, errors included, are those of any route."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request, Response

from app.core.errors import Forbidden, install_error_handlers
from app.core.hotpath import hot, serve_hot_routes
from app.core.http import BodySizeLimit
from app.core.observability import RequestContext
from tests.support import Harness
from tests.verify.test_verify_and_ekyc import bank

hot_router = APIRouter()


@hot_router.post("/hot")
@hot()
async def hot_endpoint(request: Request) -> Response:
    what = request.query_params.get("raise")
    if what == "problem":
        raise Forbidden("Not you.")
    if what == "bug":
        raise RuntimeError("a defect")
    # The router sets "endpoint" in the scope of the routes it matches: a hot route has none.
    routed = {"x-routed": "yes"} if "endpoint" in request.scope else {}
    return Response(await request.body(), media_type="application/octet-stream", headers=routed)


@hot_router.get("/hot-get")
@hot()
async def hot_get(request: Request) -> Response:
    return Response(b"got", headers={"x-routed": "yes"} if "endpoint" in request.scope else {})


class Tag:
    """An app middleware: hot routes must run inside it too."""

    def __init__(self, app: Any, value: str) -> None:
        self.app, self.value = app, value

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def tagged(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-tag", self.value.encode())]
            await send(message)

        await self.app(scope, receive, tagged)


def small_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=16)
    app.add_middleware(Tag, value="inner")
    app.add_middleware(RequestContext)

    @app.get("/cold")
    async def cold() -> dict[str, str]:
        return {"served": "by FastAPI"}

    app.include_router(hot_router)
    serve_hot_routes(app)
    return app


@pytest.fixture
async def http() -> Any:
    transport = httpx.ASGITransport(app=small_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_a_hot_route_runs_inside_the_apps_middleware(http: httpx.AsyncClient, caplog: Any) -> None:
    with caplog.at_level(logging.INFO, logger="eid.access"):
        r = await http.post("/hot", content=b"ping", headers={"X-Request-ID": "req-1"})
    assert (r.status_code, r.content) == (200, b"ping") and "x-routed" not in r.headers
    assert r.headers["x-tag"] == "inner" and r.headers["x-request-id"] == "req-1"
    assert any(
        r.getMessage().startswith("POST /hot 200") and r.request_id == "req-1" and r.route == "/hot"
        for r in caplog.records
    )
    too_big = await http.post("/hot", content=b"x" * 17)
    assert too_big.status_code == 413 and too_big.json()["type"] == "urn:eid:problem:payload-too-large"
    assert too_big.headers["x-tag"] == "inner"


async def test_a_hot_routes_errors_go_through_the_apps_handlers(http: httpx.AsyncClient, caplog: Any) -> None:
    r = await http.post("/hot?raise=problem")
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "urn:eid:problem:forbidden" and r.headers["x-tag"] == "inner"
    with caplog.at_level(logging.ERROR):
        r = await http.post("/hot?raise=bug")
    assert r.status_code == 500 and r.json()["type"] == "urn:eid:problem:internal"
    assert "a defect" not in r.text and any(rec.exc_info for rec in caplog.records)


async def test_other_methods_and_paths_go_through_fastapi(http: httpx.AsyncClient) -> None:
    assert (await http.get("/cold")).json() == {"served": "by FastAPI"}
    r = await http.get("/hot")  # not the hot route's method: FastAPI's router answers
    assert r.status_code == 405 and r.json()["type"] == "urn:eid:problem:method-not-allowed"
    assert r.headers["x-tag"] == "inner"
    got = await http.get("/hot-get")
    assert got.content == b"got" and "x-routed" not in got.headers
    r = await http.head("/hot-get")  # a GET route does not grow a HEAD
    assert r.status_code == 405


async def test_below_a_root_path_the_hot_route_still_matches() -> None:
    transport = httpx.ASGITransport(app=small_app(), root_path="/eid")
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = await client.post("/eid/hot", content=b"ping")
    assert (r.status_code, r.content) == (200, b"ping") and "x-routed" not in r.headers


async def test_the_identity_check_answers_as_every_route_does(env: Harness, caplog: Any) -> None:
    client_id, h = await bank(env)
    c = await env.citizen()
    body = {"id_number": c["id_number"], "full_name": c["full_name"]}
    with caplog.at_level(logging.INFO, logger="eid.access"):
        r = await env.client.post("/verify/identity", json=body, headers={**h, "X-Request-ID": "bank-check-7"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "bank-check-7"
    logged = [r for r in caplog.records if getattr(r, "request_id", None) == "bank-check-7"]
    assert len(logged) == 1 and logged[0].getMessage().startswith("POST /verify/identity 200")
    assert logged[0].client_id == client_id and logged[0].route == "/verify/identity"
    assert c["id_number"] not in logged[0].getMessage()
    huge = {**body, "full_name": "x" * (env.ctx.settings.max_body_bytes + 1)}
    r = await env.client.post("/verify/identity", json=huge, headers=h)
    assert r.status_code == 413 and r.json()["type"] == "urn:eid:problem:payload-too-large"
