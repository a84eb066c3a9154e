"""What the service counts, in the Prometheus format (prometheus-client): the one definition of
every series, the ASGI middleware that counts and times requests, and the helpers that keep the
hot paths cheap. ``GET /metrics`` (who may read it, what is computed when it is read) is
app/core/scrape.py; the list of series with their labels is in the README ("Metrics").

Several worker processes (``eid serve --workers N``): prometheus-client's multiprocess mode.
Each process writes its values to its own files in ``PROMETHEUS_MULTIPROC_DIR``, and a scrape,
whichever worker answers it, adds up the files of all of them. The variable must be set before
prometheus-client is imported, so ``eid serve`` sets it (app/cli.py: a fresh directory per
server) before uvicorn starts the workers. Gauges say how the values of several
processes combine (``multiprocess_mode``): here they are sums over the live processes. Without
the variable (one process: the tests, ``eid serve`` with one worker) the default registry is
used, with the process and Python collectors besides.

Label values come from fixed vocabularies (route templates, status codes, reasons, grant
types, cache names): never a raw path, an ID number, a phone number or a token. A child (a
series with its label values) is looked up in a dict made once per label set: ``labels()``
validates and takes a lock on every call.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Generic, TypeVar

from prometheus_client import Counter, Gauge, Histogram, values
from prometheus_client.metrics import MetricWrapperBase
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry
from sqlalchemy.pool import Pool as SqlaPool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Decided by prometheus-client when it was imported, from the environment.
MULTIPROCESS: bool = getattr(values.ValueClass, "_multiprocess", False)
UNMATCHED = "unmatched"  # the route label of a request no route took (never the raw path)

# Latencies from 1 ms (a cached introspection) to 10 s (past every timeout of the service).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Waits for a thread or a connection: mostly none, then up to the pool's timeout (5 s).
WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

M = TypeVar("M", bound=MetricWrapperBase)

# --- the series ---------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "eid_http_requests_total",
    "HTTP requests answered, by method, route template (unmatched: no route) and status.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "eid_http_request_duration_seconds",
    "Time from a request's arrival in the app to the end of its answer, by method, route template and status.",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
SIGN_INS = Counter(
    "eid_sign_ins_total",
    "Sign-in attempts by who signs in (citizen, staff), where (page: the OpenID login form; api) and result "
    "(ok, or the reason of the failure).",
    ["subject", "channel", "result"],
)
TOKENS_ISSUED = Counter("eid_tokens_issued_total", "Token responses of POST /token, by grant type.", ["grant"])
INTROSPECTIONS = Counter("eid_introspections_total", "POST /introspect answers, by result.", ["result"])
VERIFY_CALLS = Counter(
    "eid_verify_calls_total",
    "Checks answered to banks and agencies, by check (identity, document) and result.",
    ["check", "result"],
)
OTPS_SENT = Counter(
    "eid_otps_sent_total",
    "One-time codes queued for delivery by SMS (committed to the outbox), by purpose.",
    ["purpose"],
)
DB_POOL_IN_USE = Gauge(
    "eid_db_pool_connections_in_use",
    "Database connections checked out of the SQLAlchemy pool, by pool (summed over the live worker processes).",
    ["pool"],
    multiprocess_mode="livesum",
)
DB_POOL_MAX = Gauge(
    "eid_db_pool_connections_max",
    "Connections the SQLAlchemy pool may open, by pool (summed over the live worker processes).",
    ["pool"],
    multiprocess_mode="livesum",
)
DB_POOL_WAIT = Histogram(
    "eid_db_pool_wait_seconds",
    "Checkouts that found every connection in use, by pool, and how long they waited (_count: how many waited).",
    ["pool"],
    buckets=WAIT_BUCKETS,
)
DB_POOL_TIMEOUTS = Counter(
    "eid_db_pool_timeouts_total",
    "Checkouts that waited EID_DATABASE_POOL_TIMEOUT_SECONDS and got no connection (answered 503), by pool.",
    ["pool"],
)
ARGON2_QUEUE = Gauge(
    "eid_argon2_queue_depth",
    "argon2id hashes and verifications waiting for a worker thread (summed over the live worker processes).",
    multiprocess_mode="livesum",
)
ARGON2_RUNNING = Gauge(
    "eid_argon2_running",
    "argon2id hashes and verifications running in a worker thread (summed over the live worker processes).",
    multiprocess_mode="livesum",
)
ARGON2_WAIT = Histogram(
    "eid_argon2_wait_seconds", "Time an argon2id call waited for a worker thread.", buckets=WAIT_BUCKETS
)
ARGON2_DURATION = Histogram(
    "eid_argon2_duration_seconds", "Time an argon2id call ran in its worker thread.", buckets=LATENCY_BUCKETS
)
CACHE_LOOKUPS = Counter(
    "eid_cache_lookups_total",
    "Lookups in the per-process caches, by cache and result (hit, miss).",
    ["cache", "result"],
)
WORKERS = Gauge(
    "eid_worker_processes",
    "Worker processes whose values this scrape adds up (1 without multiprocess mode).",
    multiprocess_mode="livesum",
)


# --- cheap children -------------------------------------------------------------------------


class Children(Generic[M]):
    """The children of a metric with one label, each made once: ``TOKENS[grant].inc()``."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: M, *known: str) -> None:
        self._metric = metric
        self._children: dict[str, M] = {}
        for value in known:  # present (at zero) from the start
            self[value]

    def __getitem__(self, value: str) -> M:
        child = self._children.get(value)
        if child is None:
            child = self._children[value] = self._metric.labels(value)
        return child


class CacheCounters:
    """A cache's hit and miss counters: ``counters.hit.inc()``."""

    __slots__ = ("hit", "miss")

    def __init__(self, cache: str) -> None:
        self.hit = CACHE_LOOKUPS.labels(cache, "hit")
        self.miss = CACHE_LOOKUPS.labels(cache, "miss")


# --- HTTP requests --------------------------------------------------------------------------

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_http_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def _http_child(method: str, route: str, status: int) -> tuple[Counter, Histogram]:
    key = (method, route, status)
    found = _http_children.get(key)
    if found is None:
        # Bounded: methods are a fixed set, routes the app's templates, statuses three digits.
        labels = (method if method in _METHODS else "other", route, str(status))
        found = _http_children[key] = (HTTP_REQUESTS.labels(*labels), HTTP_DURATION.labels(*labels))
    return found


class HttpMetrics:
    """Counts and times each HTTP request by method, route template and status: the outermost
    of the app's middleware, so that it sees the answers of the others (413, 400) too. The
    route is what the router matched (``scope["route"]``, hot routes included: app/core/hotpath.py);
    a request no route took is counted under ``unmatched``. A request whose app raised before
    answering is counted as the 500 the server-error middleware then sends."""

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            count, duration = _http_child(scope["method"], getattr(route, "path", None) or UNMATCHED, status)
            count.inc()
            duration.observe(time.perf_counter() - started)


# --- the database pool ----------------------------------------------------------------------


@functools.cache
def measured_pool(name: str) -> type[SqlaPool]:
    """SQLAlchemy's asyncio queue pool, reporting the connections in use and the checkouts that
    had to wait for one (``name``: the pool's label). Pass it as ``poolclass``."""
    in_use, waits, timeouts = DB_POOL_IN_USE.labels(name), DB_POOL_WAIT.labels(name), DB_POOL_TIMEOUTS.labels(name)
    limit_gauge = DB_POOL_MAX.labels(name)
    # The limit last written: a process normally has one pool of a name (tests and commands
    # may make more), and the gauges describe the one that last checked a connection out.
    written: list[int | None] = [None]

    class MeasuredPool(AsyncAdaptedQueuePool):
        def __init__(self, creator: Any, pool_size: int = 5, max_overflow: int = 10, **kw: Any) -> None:
            super().__init__(creator, pool_size=pool_size, max_overflow=max_overflow, **kw)
            self._limit = pool_size + max_overflow if pool_size > 0 and max_overflow >= 0 else None

        def _do_get(self) -> ConnectionPoolEntry:
            # QueuePool waits when no connection is idle and it may open no other.
            if self._limit is None or self.checkedin() > 0 or self.checkedout() < self._limit:
                entry = super()._do_get()
            else:
                started = time.perf_counter()
                try:
                    entry = super()._do_get()
                except PoolTimeout:
                    timeouts.inc()
                    raise
                finally:
                    waits.observe(time.perf_counter() - started)
            in_use.set(self.checkedout())
            if written[0] != self._limit and self._limit is not None:
                written[0] = self._limit
                limit_gauge.set(self._limit)
            return entry

        def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
            super()._do_return_conn(record)
            in_use.set(self.checkedout())

    MeasuredPool.__name__ = MeasuredPool.__qualname__ = f"MeasuredPool[{name}]"
    return MeasuredPool


# --- outboxes -------------------------------------------------------------------------------

# The outbox tables (columns status, created_at), by name: their queue depth and oldest row are
# read from the database at each scrape (app/core/scrape.py). Each registers where it is defined.
OUTBOXES: dict[str, Any] = {}


def watch_outbox(name: str, model: Any) -> None:
    OUTBOXES[name] = model
