"""Per-request context carried to logs, audit rows and error answers without threading it
through every call: the request ID, and what the request's log line and failure answer need
(the route, the caller, whether anything was committed)."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


@dataclass(slots=True)
class RequestState:
    """Filled in as the request runs (one object per request, shared by the tasks it starts)."""

    request_id: str
    client_id: str | None = None  # the relying party that authenticated, if any
    subject: str | None = None  # who acted, masked (a citizen's ID number) or a staff name
    committed: bool = False  # a database transaction of this request committed


request_state_var: ContextVar[RequestState | None] = ContextVar("request_state", default=None)


def note_caller(*, client_id: str | None = None, subject: str | None = None) -> None:
    """Name the caller in this request's log line (the subject already masked)."""
    state = request_state_var.get()
    if state is not None:
        if client_id is not None:
            state.client_id = client_id
        if subject is not None:
            state.subject = subject


def note_commit() -> None:
    state = request_state_var.get()
    if state is not None:
        state.committed = True
