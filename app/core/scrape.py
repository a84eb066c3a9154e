"""``GET /metrics``: the series of app/core/metrics.py in the Prometheus text format, for a
monitoring system that holds a client_credentials access token with the ``metrics`` scope
(Prometheus: an ``oauth2`` block in the scrape config, with the client's ID and secret, the
token URL and that scope). Any other caller gets 401 or 403, as on every client-token API.

What is read when the series are scraped:
- the outboxes' queue depth and the age of their oldest queued row, from the database (the
  same rows whichever process answers): one query per outbox table (``OUTBOXES``);
- in multiprocess mode, the files of every worker process (``PROMETHEUS_MULTIPROC_DIR``).
  uvicorn has no hook at a worker's exit, so the gauges of workers that are gone (no such
  process any more) are dropped first, as prometheus-client's ``mark_process_dead`` does.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.responses import Response

from app.core.auth import Authenticator
from app.core.deps import AppContext, get_ctx
from app.core.metrics import MULTIPROC_ENV, MULTIPROCESS, OUTBOXES, WORKERS
from app.core.principal import METRICS, Principal, Subject

log = logging.getLogger("eid.metrics")
router = APIRouter(tags=["operations"])
metrics_readers = Authenticator(allowed_subjects={Subject.client}, required_scopes={METRICS})
MetricsReader = Annotated[Principal, Depends(metrics_readers)]

OUTBOX_TIMEOUT = 2.0  # seconds; past it the scrape answers without the outbox series
_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")

# This process serves requests: it counts in the scrape (1 each; summed over the live workers).
WORKERS.set(1)

_PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": f"The series in the Prometheus text exposition format 0.0.4 (`{CONTENT_TYPE_PLAIN_0_0_4}`)",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
    401: {"description": "No bearer token, or not a valid client_credentials access token", "content": _PROBLEM},
    403: {"description": "The token lacks the metrics scope", "content": _PROBLEM},
    429: {"description": "The client's rate limit (EID_CLIENT_RATE_PER_MINUTE) is spent", "content": _PROBLEM},
}


@router.get(
    "/metrics",
    summary="Service metrics for Prometheus (a client token with the metrics scope)",
    response_class=Response,
    responses=_RESPONSES,
)
async def metrics(request: Request, _caller: MetricsReader) -> Response:
    figures = await _outbox_figures(get_ctx(request))
    body = generate_latest(_registry()) + generate_latest(figures)
    return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)


_multiprocess_registry: CollectorRegistry | None = None


def _registry() -> CollectorRegistry:
    """The default registry, or in multiprocess mode every worker's files."""
    global _multiprocess_registry
    if not MULTIPROCESS:
        return REGISTRY
    path = os.environ[MULTIPROC_ENV]
    _forget_dead_workers(path)
    if _multiprocess_registry is None:
        _multiprocess_registry = CollectorRegistry()
        MultiProcessCollector(_multiprocess_registry, path=path)  # type: ignore[no-untyped-call]
    return _multiprocess_registry


def _forget_dead_workers(path: str) -> None:
    for file in Path(path).glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.fullmatch(file.name)
        if match is not None and not _alive(int(match.group(1))):
            mark_process_dead(int(match.group(1)), path)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


class _OutboxFigures(Collector):
    def __init__(self, rows: dict[str, tuple[int, float]]) -> None:
        self.rows = rows

    def collect(self) -> Iterator[Metric]:
        if not self.rows:
            return
        queued = GaugeMetricFamily(
            "eid_outbox_queued", "Messages waiting for delivery (or a retry), by outbox.", labels=["outbox"]
        )
        oldest = GaugeMetricFamily(
            "eid_outbox_oldest_age_seconds",
            "Age of the oldest message waiting for delivery, by outbox (0 when none waits).",
            labels=["outbox"],
        )
        for name, (count, age) in sorted(self.rows.items()):
            queued.add_metric([name], count)
            oldest.add_metric([name], age)
        yield queued
        yield oldest


async def _outbox_figures(ctx: AppContext) -> _OutboxFigures:
    """Each outbox's queued rows and the age of the oldest, or nothing when the database does not
    answer in time (the other series are still worth having)."""
    now = ctx.clock.now()

    async def read() -> dict[str, tuple[int, float]]:
        rows: dict[str, tuple[int, float]] = {}
        async with ctx.reader() as session:
            for name, model in OUTBOXES.items():
                count, first = (
                    await session.execute(
                        select(func.count(), func.min(model.created_at)).where(model.status == "queued")
                    )
                ).one()
                rows[name] = (int(count), _age(now, first))
        return rows

    try:
        return _OutboxFigures(await asyncio.wait_for(read(), timeout=OUTBOX_TIMEOUT))
    except Exception as exc:  # the database is down or busy: answer without these series
        log.warning("outbox figures not read (%s): /metrics answers without them", type(exc).__name__)
        return _OutboxFigures({})


def _age(now: dt.datetime, first: dt.datetime | None) -> float:
    return 0.0 if first is None else max(0.0, (now - first).total_seconds())
