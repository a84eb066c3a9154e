"""How uvicorn serves the app: its httptools protocol, with each response sent in one write.

uvicorn writes a response's status line and headers, then its body, in two ``write`` calls,
and each becomes a system call and a TCP segment on its own: the client is woken twice for
one answer. On these machines that second write is a measurable share of a hot request's CPU
(bench/token.py, py-spy). Here the writes a connection makes within one turn of the event loop
are joined and handed to the socket once, at the end of that turn; nothing is held longer, and
a close sends what is pending first. Past 64 KiB pending, the writes go to the socket at once,
so that uvicorn's flow control (the socket transport's high-water mark) still holds back a
large or streamed body.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HELD = 64 * 1024  # bytes; asyncio's and uvloop's default high-water mark


class _JoinedWrites:
    """A transport whose writes within one event-loop turn reach the socket as one."""

    __slots__ = ("_held", "_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._held = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))
        self._held += len(data)
        if self._held > MAX_HELD:
            self._flush()  # the socket transport decides now whether to pause the writer

    def _flush(self) -> None:
        pending, self._pending, self._held = self._pending, [], 0
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def get_write_buffer_size(self) -> int:
        return self._held + self._transport.get_write_buffer_size()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending, self._held = [], 0
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # everything else is the socket's transport
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a transport that joins a response's writes; pass it
    as ``http=`` to uvicorn (``eid serve`` does)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_JoinedWrites(transport, self.loop))  # type: ignore[arg-type]


# How every entry point runs uvicorn (eid serve, demo mode, bench/token_app.py): this protocol,
# no access log of uvicorn's own (app/core/observability.py writes a scrubbed one), the app's
# logging configuration, no proxy headers trusted, no Server header.
UVICORN_OPTIONS: dict[str, Any] = {
    "http": HttpProtocol,
    "access_log": False,
    "log_config": None,
    "proxy_headers": False,
    "server_header": False,
}
