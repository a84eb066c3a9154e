"""GET /metrics of `eid serve --workers 2` (prometheus-client's multiprocess mode, app/core/metrics.py):
whichever worker answers, the figures are those of both; a worker that dies and is replaced
keeps its counts but leaves the gauges; files of an earlier run are not counted. Real servers,
started as an operator starts them (tests/oidc/live_server.py), on SQLite."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

from tests.core.test_metrics import Scrape
from tests.oidc.live_server import ROOT, LiveServer, _stop, _wait_ready, free_port, live_server

HEALTHZ = {"method": "GET", "route": "/healthz", "status": "200"}
METRICS = {"method": "GET", "route": "/metrics", "status": "200"}


@contextlib.contextmanager
def two_workers(tmp: Path, env: dict[str, str] | None = None) -> Iterator[LiveServer]:
    """`eid serve --workers 2` on the database of a migrated, seeded live server's directory."""
    with live_server(tmp) as first:  # migrates and seeds; its own single process stops here
        base = first.env
    port = free_port()
    server = LiveServer(
        issuer=f"http://127.0.0.1:{port}", env={**base, "EID_ISSUER": f"http://127.0.0.1:{port}", **(env or {})},
        log_path=tmp / "workers.log",
    )  # fmt: skip
    with server.log_path.open("wb") as log:
        server.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", "2"],
            cwd=ROOT, env=server.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        _wait_ready(server, time.monotonic() + 30)
        yield server
    finally:
        _stop(server.process)


def reader_token(server: LiveServer) -> dict[str, str]:
    # The command runs without the server's metrics directory: it is no worker of the server.
    command = LiveServer(
        server.issuer, {k: v for k, v in server.env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}, server.log_path
    )
    client_id, secret = command.create_client(
        "Prometheus", "--kind", "admin", "--grant", "client_credentials", "--scope", "metrics", "--approve"
    )
    resp = httpx.post(server.url("/token"), data={"grant_type": "client_credentials"}, auth=(client_id, secret or ""))
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}


def scrape(server: LiveServer, headers: dict[str, str]) -> Scrape:
    # A new connection each time, so that either worker may take it.
    resp = httpx.get(server.url("/metrics"), headers=headers)
    assert resp.status_code == 200, resp.text
    return Scrape(resp.text)


def workers_of(directory: Path) -> set[int]:
    """The processes with live gauges in the directory: every worker writes eid_worker_processes."""
    return {int(m.group(1)) for f in directory.iterdir() if (m := re.fullmatch(r"gauge_livesum_(\d+)\.db", f.name))}


def counted_by(directory: Path, pid: int, labels: dict[str, str]) -> float:
    """eid_http_requests_total{labels} in one process's own file."""
    files = [str(f) for f in directory.glob(f"counter_{pid}.db")]
    for metric in MultiProcessCollector.merge(files):
        for sample in metric.samples:
            if sample.name == "eid_http_requests_total" and sample.labels == labels:
                return float(sample.value)
    return 0.0


def get_healthz(server: LiveServer, count: int) -> None:
    def one(_: int) -> None:
        assert httpx.get(server.url("/healthz")).status_code == 200  # a new connection each

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(count)))


def test_both_workers_are_counted_whichever_answers(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    # What an earlier run left: 1,000 health checks and 5 workers, none of which are this run's.
    stale = MmapedDict(str(directory / "counter_999999.db"))
    stale.write_value(
        mmap_key("eid_http_requests_total", "eid_http_requests_total", list(HEALTHZ), list(HEALTHZ.values()), ""),
        1000.0,
        0.0,
    )
    stale.close()
    stale = MmapedDict(str(directory / "gauge_livesum_999998.db"))
    stale.write_value(mmap_key("eid_worker_processes", "eid_worker_processes", [], [], ""), 5.0, 0.0)
    stale.close()

    with two_workers(tmp_path, {"PROMETHEUS_MULTIPROC_DIR": str(directory)}) as server:
        assert not (directory / "counter_999999.db").exists()
        headers = reader_token(server)
        deadline = time.monotonic() + 30
        while len(workers_of(directory)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        pids = workers_of(directory)
        assert len(pids) == 2, (pids, server.log_tail())
        # Health checks until each worker has answered some (the kernel chooses who accepts).
        sent = 0
        while time.monotonic() < deadline:
            get_healthz(server, 40)
            sent += 40
            if all(counted_by(directory, pid, HEALTHZ) > 0 for pid in pids):
                break
        split = {pid: counted_by(directory, pid, HEALTHZ) for pid in pids}
        assert all(split.values()) and sum(split.values()) == sent, split
        # Scrapes until each worker has answered at least one: every answer has both workers' counts.
        answers = []
        while time.monotonic() < deadline:
            answers.append(scrape(server, headers))
            if all(counted_by(directory, pid, METRICS) > 0 for pid in pids):
                break
        assert all(counted_by(directory, pid, METRICS) > 0 for pid in pids), server.log_tail()
        for answer in answers:
            assert answer("eid_http_requests_total", **HEALTHZ) == sent
            assert answer("eid_http_request_duration_seconds_count", **HEALTHZ) == sent
            assert answer("eid_worker_processes") == 2
            assert answer("eid_tokens_issued_total", grant="client_credentials") == 1
            assert answer.has("eid_db_pool_connections_in_use", pool="main")

        # A worker killed outright: uvicorn starts another; its counts stay, its gauges go.
        victim = max(pids, key=lambda pid: split[pid])
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        after = scrape(server, headers)
        while after("eid_worker_processes") != 2 or len(workers_of(directory) - pids) < 1:
            assert time.monotonic() < deadline, (after("eid_worker_processes"), server.log_tail())
            time.sleep(0.1)
            after = scrape(server, headers)
        assert victim not in workers_of(directory)  # its live gauges were dropped
        assert (directory / f"counter_{victim}.db").exists()  # its counts were kept
        assert after("eid_http_requests_total", **HEALTHZ) == sent
    assert directory.exists()  # the operator's directory stays


def test_serve_makes_and_removes_its_own_directory(tmp_path: Path) -> None:
    with two_workers(tmp_path) as server:
        headers = reader_token(server)
        found = re.search(r"workers write their metrics in (\S+)", server.log())
        assert found, server.log_tail()
        directory = Path(found.group(1))
        assert directory.is_dir() and directory.name.startswith("eid-metrics-")
        deadline = time.monotonic() + 30
        while scrape(server, headers)("eid_worker_processes") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        get_healthz(server, 20)
        answer = scrape(server, headers)
        assert answer("eid_worker_processes") == 2
        assert answer("eid_http_requests_total", **HEALTHZ) == 20
    assert not directory.exists()


def test_one_worker_uses_no_directory(tmp_path: Path) -> None:
    with live_server(tmp_path) as server:
        headers = reader_token(server)
        assert "write their metrics" not in server.log()
        answer = scrape(server, headers)
        assert answer("eid_worker_processes") == 1
        assert answer.has("process_cpu_seconds_total")  # the default registry's collectors
