"""The ASGI application: built by ``create_app`` from one Settings object."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from app.accounts.pages import router as accounts_pages_router
from app.accounts.router import me as me_router
from app.accounts.router import officer as accounts_officer_router
from app.accounts.router import public as accounts_router
from app.accounts.service import resolve_citizen_session
from app.admin.router import router as admin_router
from app.admin.service import resolve_staff_session
from app.clients.router import router as clients_router
from app.clients.service import start_client_cache
from app.consent.router import router as consents_router
from app.core.clock import Clock
from app.core.config import Settings, get_settings
from app.core.deps import build_context
from app.core.errors import install_error_handlers, problem_response
from app.core.hotpath import hot_routes, serve_hot_routes
from app.core.http import BodySizeLimit, NoNul
from app.core.metrics import HttpMetrics
from app.core.observability import RequestContext
from app.core.pages import lang_router
from app.core.principal import Resolver, Subject
from app.core.readiness import readiness
from app.core.schemas import ResponseModel
from app.core.scrape import router as metrics_router
from app.core.sms import delivery_loop, make_email_gateway, make_gateway
from app.documents.router import admin as documents_admin_router
from app.documents.router import agency as documents_router
from app.documents.router import me as documents_me_router
from app.oidc.bearer import resolve_client_token
from app.oidc.endpoints import router as oidc_router
from app.oidc.logout import logout_delivery_loop
from app.oidc.logout import router as logout_router
from app.oidc.pages import router as authorize_router
from app.oidc.startup import start_provider
from app.registry.router import router as registry_router
from app.sharing.router import me as sharing_me_router
from app.sharing.router import router as sharing_router
from app.verify.router import me as verify_me_router
from app.verify.router import router as verify_router
from app.verify.service import start_identity_checks

DESCRIPTION = """National electronic-identity service: the population registry, citizen accounts
(level 1 self-registered, level 2 officer-assisted) and the OpenID Connect provider for
public-service portals. REST errors are RFC 9457 problem details; OAuth endpoints answer
RFC 6749 errors."""


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with build_context(settings, clock=clock, serving=True) as ctx:
            app.state.ctx = ctx
            app.state.sessionmaker = ctx.sessionmaker
            app.state.clock = ctx.clock
            app.state.engine = ctx.engine
            # Who is calling (app/core/auth.py): the cheap shape check of client tokens first.
            ctx.resolvers += [
                Resolver(Subject.client, resolve_client_token),
                Resolver(Subject.staff, resolve_staff_session),
                Resolver(Subject.citizen, resolve_citizen_session),
            ]
            # The domains' own long-lived state, as extensions of the context.
            start_client_cache(ctx)
            provider = await start_provider(ctx)
            start_identity_checks(ctx)
            stop = asyncio.Event()
            workers = [asyncio.create_task(logout_delivery_loop(provider, stop))]
            sms_gateway, email_gateway = make_gateway(settings), make_email_gateway(settings)
            if sms_gateway is not None or email_gateway is not None:
                loop = delivery_loop(
                    ctx.sessionmaker, sms_gateway, email_gateway, ctx.keyring, settings, ctx.clock.now, stop
                )
                workers.append(asyncio.create_task(loop))
            # Everything built so far lives as long as the process: keep it out of the cyclic
            # garbage collector's full passes, which otherwise rescan it all and stall the event
            # loop for ~100 ms under load (bench/token.py, verify_identity p99).
            gc.freeze()
            try:
                yield
            finally:
                # Let a delivery pass in progress finish (bounded), then stop.
                stop.set()
                _, late = await asyncio.wait(workers, timeout=10.0)
                for worker in late:
                    worker.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await worker

    on = settings.telemetry
    app = FastAPI(
        title="e-ID service",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        telemetry={"tracing": on, "metrics": on, "logs": on},
    )
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(NoNul)
    app.add_middleware(RequestContext)
    app.add_middleware(HttpMetrics)  # outermost: it sees the others' answers too

    @app.get("/healthz", tags=["operations"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Whether this process can serve, and why not (app/core/readiness.py)",
        responses={
            200: {"description": "Ready (``degraded`` when Redis is down and limits are counted in the database)"},
            503: {
                "description": "Not ready: the checks say why; ask again after Retry-After",
                "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
            },
        },
        response_model=ReadyOut,
    )
    async def readyz() -> object:
        state = await readiness(app.state.ctx)
        if not state.ready:
            return problem_response(
                503, "not-ready", "Not ready", "; ".join(f"{k}: {v}" for k, v in state.checks.items() if v != "ok"),
                headers={"Retry-After": "5"}, checks=state.checks,
            )  # fmt: skip
        return ReadyOut(status="degraded" if state.degraded else "ready", checks=state.checks)

    app.openapi = lambda: _openapi_with_problems(app)  # type: ignore[method-assign]
    if settings.demo:
        from app.demo.routes import router as demo_router

        app.include_router(demo_router)
        app.add_middleware(DemoHeader)
    app.include_router(oidc_router)  # hot endpoints first: routes are matched in order
    app.include_router(registry_router)
    app.include_router(accounts_router)
    app.include_router(accounts_officer_router)
    app.include_router(me_router)
    app.include_router(admin_router)
    app.include_router(clients_router)
    app.include_router(authorize_router)
    app.include_router(logout_router)
    app.include_router(accounts_pages_router)
    app.include_router(lang_router)
    app.include_router(consents_router)
    app.include_router(documents_router)
    app.include_router(documents_me_router)
    app.include_router(documents_admin_router)
    app.include_router(sharing_me_router)
    app.include_router(sharing_router)
    app.include_router(verify_router)
    app.include_router(verify_me_router)
    app.include_router(metrics_router)
    # The routes declared @hot are matched before everything else and skip FastAPI's per-request
    # layers (app/core/hotpath.py); the OpenAPI document describes them from their APIRoutes.
    serve_hot_routes(app)
    return app


class DemoHeader:
    """Every answer of a demo instance says so, so that nobody mistakes it for the real service."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def tagged(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-eid-demo", b"true")]
            await send(message)

        await self.app(scope, receive, tagged if scope["type"] == "http" else send)


_PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details. `type` is a stable URN (urn:eid:problem:<slug>).",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "example": "urn:eid:problem:validation"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "For validation problems: the fields and what is wrong with each.",
            "items": {"type": "object", "properties": {"field": {"type": "string"}, "message": {"type": "string"}}},
        },
    },
    "additionalProperties": True,
}


class ReadyOut(ResponseModel):
    status: str  # "ready", or "degraded" (serving, with a fallback in use)
    checks: dict[str, str]


def _openapi_with_problems(app: FastAPI) -> dict[str, object]:
    """FastAPI documents its own 422 body; ours are problem+json, so say so everywhere."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi
    from pydantic.json_schema import models_json_schema

    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = {"description": "Invalid input", "content": problem}
            # Any route can also answer a problem from the app's own layers (400 for a NUL in the
            # request, 413, 503): an error status documented with other content has it too.
            for status, response in responses.items():
                if status[:1] in ("4", "5") and "content" in response:
                    response["content"].setdefault("application/problem+json", problem["application/problem+json"])
            responses.setdefault("default", {"description": "Problem details", "content": problem})
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    # Bodies that hot routes parse themselves: the operation's requestBody and the model's schema.
    bodies = {}
    for route in hot_routes(app.routes):
        body = route.spec.body
        if body is not None:
            bodies[body.__name__] = body
            ref = {"$ref": f"#/components/schemas/{body.__name__}"}
            for method in route.methods:
                operation = schema["paths"][route.path][method.lower()]
                operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref}}}
    _, defs = models_json_schema(
        [(model, "validation") for model in bodies.values()], ref_template="#/components/schemas/{model}"
    )
    for name, model_schema in defs.get("$defs", {}).items():
        components.setdefault(name, model_schema)
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components["Problem"] = _PROBLEM_SCHEMA
    app.openapi_schema = schema
    return schema
