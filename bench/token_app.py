"""The server that ``bench/token.py`` measures: the real app, ``app.main.create_app(Settings())``
(settings from the ``EID_*`` environment), plus a bare FastAPI route returning a small dict,
the framework's own ceiling measured in the same processes:

- ``GET /bench/bare`` is put first in the route table, as in an app that has only it. Starlette
  and FastAPI match routes in order, and FastAPI 0.163 matches each included router on every
  request, so a route behind the app's routers costs more CPU per request (~350 µs more in
  the last full run, bench/results/token.json);
- ``GET /bench/bare-last`` is the same route appended last: that gap is the routing cost.

Run one process per core, each binding its own listening socket with ``SO_REUSEPORT`` so the
kernel spreads connections between them by a hash (splits of 50 connections from 25/25 to
15/35 were seen; bench/token.py prints each), where ``uvicorn --workers N`` shares one accept
queue and gave 48/2 splits (docs/facts.md §5):

    python -m bench.token_app --port 8100 --ready-file /tmp/ready.1 &
    python -m bench.token_app --port 8100 --ready-file /tmp/ready.2 &

uvicorn runs as ``eid serve`` runs it (``app.core.server.UVICORN_OPTIONS``: uvloop and
httptools, each response in one write, no access log from uvicorn, the app's own request log
at ``--log-level``, no proxy headers, no server header).
"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from app.core.config import Settings
from app.core.observability import configure_logging
from app.core.server import UVICORN_OPTIONS
from app.main import create_app


def create_bench_app() -> FastAPI:
    app = create_app(Settings())

    async def bare() -> dict[str, str]:
        return {"status": "ok", "service": "eid"}

    app.add_api_route("/bench/bare", bare, methods=["GET"], include_in_schema=False)
    app.router.routes.insert(0, app.router.routes.pop())  # matched first
    app.add_api_route("/bench/bare-last", bare, methods=["GET"], include_in_schema=False)
    return app


class _Server(uvicorn.Server):
    """Touches a file once the lifespan has run and the socket is served (readiness of this
    very process: with SO_REUSEPORT a request to the port may reach any of them)."""

    def __init__(self, config: uvicorn.Config, ready_file: Path | None) -> None:
        super().__init__(config)
        self.ready_file = ready_file

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.ready_file is not None:
            self.ready_file.write_text("ready\n")


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the benchmark app on a SO_REUSEPORT socket.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--ready-file", type=Path)
    args = parser.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)
    sock.set_inheritable(True)

    configure_logging(args.log_level.upper())
    config = uvicorn.Config(
        create_bench_app,
        factory=True,
        backlog=2048,
        **UVICORN_OPTIONS,
    )
    _Server(config, args.ready_file).run(sockets=[sock])


if __name__ == "__main__":
    main()
