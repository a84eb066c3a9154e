"""The hottest routes, served past the framework's per-request layers.

FastAPI passes every request through seven layers before a route's code runs (server-error and
telemetry middleware, Starlette's exception middleware, an exit-stack middleware, the router,
and the route's own request/response and exception wrappers), each a coroutine call and, for
most, a wrapped ``send``. For a bank's identity check they cost more CPU than the app's own
middleware and the check's body parsing together (bench/token.py, py-spy).

A hot route is matched first, by method and exact path (below any root path), put in the scope
as the router puts the route it matched (``scope["route"]``: its shadow below), and runs inside
the same layers of the app's that every route runs in: Starlette's server-error middleware with
the app's 500 handler, the app's own middleware rebuilt from ``app.user_middleware`` (request
ID and access log, body-size limit, the demo header), and the app's other exception handlers,
looked up as Starlette's exception middleware does. Its answers, errors included, are those of
any route. Every other request goes through FastAPI unchanged, and so do other methods on a
hot path (405 from the router).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import FastAPI, routing
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]
E = TypeVar("E", bound=Endpoint)


@dataclass(frozen=True, slots=True)
class HotSpec:
    body: type[BaseModel] | None  # a JSON body the endpoint parses itself (for the OpenAPI document)


def hot(*, body: type[BaseModel] | None = None) -> Callable[[E], E]:
    """Declare a route hot, the one way to do it: under the route's decorator,

        @router.post("/token", ...)
        @hot()
        async def token(request: Request) -> Response: ...

    The endpoint takes the raw Request; ``body`` names the model of a JSON body it parses
    itself, so that the OpenAPI document still describes it."""

    def mark(endpoint: E) -> E:
        endpoint.__eid_hot__ = HotSpec(body)  # type: ignore[attr-defined]
        return endpoint

    return mark


@dataclass(frozen=True, slots=True)
class HotRoute:
    path: str  # as served, with the prefixes of the routers it was included through
    methods: frozenset[str]
    endpoint: Endpoint
    spec: HotSpec


def hot_routes(routes: Sequence[BaseRoute]) -> list[HotRoute]:
    """The routes declared ``@hot`` among an app's routes (through included routers)."""
    found = []
    for context in routing.iter_route_contexts(routes):
        route = context.original_route
        spec = getattr(getattr(route, "endpoint", None), "__eid_hot__", None)
        if isinstance(route, APIRoute) and isinstance(spec, HotSpec) and context.path_format:
            found.append(HotRoute(context.path_format, frozenset(route.methods or ()), route.endpoint, spec))
    return found


def _lookup(handlers: dict[Any, Any], exc: Exception) -> Any:
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None


def _endpoint_app(endpoint: Endpoint, handlers: dict[Any, Any]) -> ASGIApp:
    """The route: its endpoint, and the handlers of the exceptions it raises (not of 500 and
    Exception: those are the server-error middleware's, outside the app's middleware)."""

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


def _route_path(scope: Scope) -> str:
    """The path below the root path, as Starlette's router matches it."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path


class HotRoutes:
    def __init__(self, app: ASGIApp, routes: dict[tuple[str, str], tuple[ASGIApp, Route]]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            hot = self.routes.get((scope["method"], _route_path(scope)))
            if hot is not None:
                # The matched route, where the router puts it (the request metrics read its path).
                chain, scope["route"] = hot
                await chain(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _shadow(route: HotRoute) -> Route:
    """A plain route for the router, with the APIRoute's methods only (Starlette would add HEAD
    to a GET route, which the APIRoute does not answer)."""
    shadow = Route(route.path, route.endpoint, methods=sorted(route.methods))
    if shadow.methods is not None and "HEAD" not in route.methods:
        shadow.methods.discard("HEAD")
    return shadow


def serve_hot_routes(app: FastAPI) -> None:
    """Serve the routes declared ``@hot`` ahead of FastAPI's layers. They are also put first in
    the router, as plain Starlette routes, which answer their other methods (405) and any
    request the exact match would miss; the OpenAPI document describes them from their
    APIRoutes (app.main)."""
    routes = hot_routes(app.router.routes)
    shadows = [_shadow(r) for r in routes]
    app.router.routes[0:0] = shadows
    build = app.build_middleware_stack

    def build_with_hot_routes() -> ASGIApp:
        hot: dict[tuple[str, str], tuple[ASGIApp, Route]] = {}
        error_handler = app.exception_handlers.get(500) or app.exception_handlers.get(Exception)
        handlers = {k: v for k, v in app.exception_handlers.items() if k not in (500, Exception)}
        for route, shadow in zip(routes, shadows, strict=True):
            chain = _endpoint_app(route.endpoint, handlers)
            for cls, args, kwargs in reversed(app.user_middleware):
                chain = cls(chain, *args, **kwargs)
            chain = ServerErrorMiddleware(chain, handler=error_handler, debug=app.debug)
            for method in route.methods:
                hot[(method, route.path)] = (chain, shadow)
        return HotRoutes(build(), hot)

    app.build_middleware_stack = build_with_hot_routes  # type: ignore[method-assign]
