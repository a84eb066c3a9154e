"""pytest plugin (entry point ``pytest11``: ``eid``): the real e-ID service in your tests.

Fixtures:
- ``eid_server`` (session): a running ``eid serve --demo`` on a free port, seeded from
  ``eid_fixtures_file`` (override that fixture, or set ``eid_fixtures`` in your pytest ini).
- ``eid_login(client_id, citizen, scopes=..., acr=..., act_for=...)``: a logged-in citizen's
  token response, through the real login and consent pages.
- ``eid_outbox(phone)``: SMS sent (OTP codes, initial passwords).
- ``eid_clock``: ``eid_clock.advance(seconds)``; the clock is put back after each test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.testing.client import EidServer, start_demo_server


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "eid_fixtures", "Fixtures file for the eid_server fixture (default: built-in demo fixtures)", default=""
    )


@pytest.fixture(scope="session")
def eid_fixtures_file(pytestconfig: pytest.Config) -> Path | None:
    value = str(pytestconfig.getini("eid_fixtures") or "")
    return (Path(pytestconfig.rootpath) / value) if value else None


@pytest.fixture(scope="session")
def eid_server(eid_fixtures_file: Path | None) -> Iterator[EidServer]:
    server = start_demo_server(eid_fixtures_file)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def eid_login(eid_server: EidServer) -> Callable[..., dict[str, Any]]:
    return eid_server.login


@pytest.fixture
def eid_outbox(eid_server: EidServer) -> Callable[..., list[dict[str, str]]]:
    return eid_server.outbox


class _Clock:
    def __init__(self, server: EidServer) -> None:
        self._server = server

    def advance(self, seconds: int) -> None:
        self._server.advance_clock(seconds)


@pytest.fixture
def eid_clock(eid_server: EidServer) -> Iterator[_Clock]:
    yield _Clock(eid_server)
    eid_server.reset_clock()
