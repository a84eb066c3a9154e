"""The hottest routes, served past the framework's per-request layers.

FastAPI passes every request through seven layers before a route's code runs (server-error and
telemetry middleware, Starlette's exception middleware, an exit-stack middleware, the router,
and the route's own request/response and exception wrappers), each a coroutine call and, for
most, a wrapped ``send``. For a bank's identity check they cost more CPU than the app's own
middleware and the check's body parsing together (bench/token.py, py-spy).

A hot route is matched first, by method and exact path, and runs inside the same middleware as
every other route (the app's own, rebuilt from ``app.user_middleware``: request ID and access
log, body-size limit, the demo header) with the app's own exception handlers, so its answers,
errors included, are those of any route. Every other request goes through FastAPI unchanged,
and so do other methods on a hot path (405 from the router).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


def _lookup(handlers: dict[Any, Any], exc: Exception) -> Any:
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None


def _endpoint_app(endpoint: Endpoint, handlers: dict[Any, Any]) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except Exception as exc:
            handler = _lookup(handlers, exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)

    return app


class HotRoutes:
    def __init__(self, app: ASGIApp, routes: dict[tuple[str, str], ASGIApp]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            hot = self.routes.get((scope["method"], scope["path"]))
            if hot is not None:
                await hot(scope, receive, send)
                return
        await self.app(scope, receive, send)


def serve_hot_routes(app: FastAPI, routes: Sequence[APIRoute]) -> None:
    """Serve these routes' endpoints (each taking the raw Request) ahead of FastAPI's layers.
    Those not in the router already are put first in it, as plain Starlette routes, which
    answers their other methods (405) and any request the exact match misses (a root path,
    say); the OpenAPI document describes them from their APIRoutes (app.main)."""
    missing = [r for r in routes if r not in app.router.routes]
    app.router.routes[0:0] = [Route(r.path, r.endpoint, methods=sorted(r.methods or ())) for r in missing]
    build = app.build_middleware_stack

    def build_with_hot_routes() -> ASGIApp:
        hot: dict[tuple[str, str], ASGIApp] = {}
        for route in routes:
            chain = _endpoint_app(route.endpoint, app.exception_handlers)
            for cls, args, kwargs in reversed(app.user_middleware):
                chain = cls(chain, *args, **kwargs)
            for method in route.methods or ():
                hot[(method, route.path)] = chain
        return HotRoutes(build(), hot)

    app.build_middleware_stack = build_with_hot_routes  # type: ignore[method-assign]
