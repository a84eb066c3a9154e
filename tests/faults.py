"""Load for black-box fault tests: real HTTP clients on keep-alive connections that record
every answer, and every connection the server closed."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Answer:
    kind: str
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Request = Callable[[int], tuple[str, str, str, bytes | None, dict[str, str]]]  # n -> kind, method, path, body, headers


@dataclass
class Load:
    """``clients`` threads, each with one keep-alive connection, sending ``requests`` in turn
    until stopped. Records every answer, and every time the server closed a connection."""

    port: int
    requests: list[Request]
    clients: int = 16
    answers: list[Answer] = field(default_factory=list)
    closed_by_server: int = 0
    transport_errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self, worker: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        n = worker
        while not self._stop.is_set():
            kind, method, path, body, headers = self.requests[n % len(self.requests)](n)
            n += self.clients
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                answer = Answer(kind, resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                with self._lock:
                    self.closed_by_server += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                continue
            except OSError as exc:
                with self._lock:
                    self.transport_errors.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                continue
            with self._lock:
                self.answers.append(answer)
            if answer.headers.get("connection", "").lower() == "close":
                with self._lock:
                    self.closed_by_server += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.close()

    def start(self) -> Load:
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.clients)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def by_status(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for a in self.answers:
            out[a.status] = out.get(a.status, 0) + 1
        return out


def wait_until(check: Callable[[], bool], seconds: float, step: float = 0.05, why: list[str] | None = None) -> float:
    """Seconds until ``check()`` held; fails after ``seconds`` (saying ``why``, if the check
    fills it in)."""
    started = time.monotonic()
    while True:
        if check():
            return time.monotonic() - started
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not within {seconds} s: {why}")
        time.sleep(step)
