"""The service's notion of now. One object per app, so tests (and demo mode) can move time
without sleeping; production uses the system clock with no offset."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import Depends, Request


class Clock:
    def __init__(self, offset: dt.timedelta | None = None) -> None:
        self.offset = offset or dt.timedelta(0)

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset

    def today(self) -> dt.date:
        # Ages and birthdays are counted in Vietnam's civil time (UTC+7).
        return (self.now() + dt.timedelta(hours=7)).date()

    def advance(self, delta: dt.timedelta) -> None:
        self.offset += delta


def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


async def _get_clock_dependency(request: Request) -> Clock:
    # An async dependency: FastAPI runs plain `def` dependencies in a thread pool.
    return get_clock(request)


ClockDep = Annotated[Clock, Depends(_get_clock_dependency)]
