"""How the service is served (app/core/server.py): uvicorn's httptools protocol over a transport
that hands a response's writes to the socket once. Unit tests of that transport, then real
HTTP/1.1 exchanges with a uvicorn server run as ``eid serve`` runs it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from app.core.server import MAX_HELD, UVICORN_OPTIONS, _JoinedWrites


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8000) if name == "sockname" else default

    def get_write_buffer_size(self) -> int:
        return 0

    def write_eof(self) -> None:
        self.writes.append(b"<eof>")


def joined() -> tuple[_JoinedWrites, FakeTransport]:
    fake = FakeTransport()
    return _JoinedWrites(fake, asyncio.get_running_loop()), fake  # type: ignore[arg-type]


async def test_writes_within_one_loop_turn_reach_the_socket_as_one() -> None:
    transport, fake = joined()
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(memoryview(b"ok"))
    assert fake.writes == []  # nothing yet: the turn is not over
    await asyncio.sleep(0)
    assert fake.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]


async def test_writes_of_later_turns_are_not_held() -> None:
    transport, fake = joined()
    transport.write(b"first")
    await asyncio.sleep(0)
    transport.write(b"")  # nothing to send: no write at all
    await asyncio.sleep(0)
    transport.write(b"second")
    await asyncio.sleep(0)
    assert fake.writes == [b"first", b"second"]


async def test_close_sends_what_is_pending_first_and_abort_drops_it() -> None:
    transport, fake = joined()
    transport.write(b"last words")
    transport.close()
    assert fake.writes == [b"last words"] and fake.closed
    await asyncio.sleep(0)  # the scheduled flush finds nothing more to send
    assert fake.writes == [b"last words"]

    transport, fake = joined()
    transport.write(b"never sent")
    transport.abort()
    await asyncio.sleep(0)
    assert fake.writes == [] and fake.aborted


async def test_past_64_kib_writes_go_to_the_socket_at_once() -> None:
    """So that the socket transport's flow control still pauses a large or streamed body."""
    transport, fake = joined()
    chunk = b"x" * (MAX_HELD // 2)
    transport.write(chunk)
    transport.write(chunk)
    assert fake.writes == [] and transport.get_write_buffer_size() == MAX_HELD
    transport.write(b"y")  # over the limit: no waiting for the end of the turn
    assert fake.writes == [chunk + chunk + b"y"] and transport.get_write_buffer_size() == 0
    transport.write(b"tail")
    transport.write_eof()  # what is pending goes first
    assert fake.writes[1:] == [b"tail", b"<eof>"]


async def test_everything_else_is_the_socket_transports() -> None:
    transport, fake = joined()
    assert transport.get_extra_info("sockname") == ("127.0.0.1", 8000)
    assert transport.is_closing() is False
    fake.closed = True
    transport.write(b"too late")
    await asyncio.sleep(0)
    assert fake.writes == []  # a closed transport is not written to


# A real server: uvicorn with the service's options, serving a small app that covers each
# kind of answer (fixed length, streamed, HEAD, a body read after 100 Continue).


async def _hello(_: Request) -> Response:
    return PlainTextResponse("hello")


async def _stream(_: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"one,", b"two,", b"three"):
            yield part
            await asyncio.sleep(0.01)

    return StreamingResponse(chunks(), media_type="text/plain")


BIG_CHUNKS = 300  # of 64 KiB: ~19 MiB, far more than the socket buffers hold (~4 MiB seen)
produced: list[int] = []


async def _big(_: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(BIG_CHUNKS):  # never awaits by itself: only flow control can stop it
            produced.append(1)
            yield b"z" * 65536

    return StreamingResponse(chunks(), media_type="application/octet-stream")


async def _echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/octet-stream")


APP = Starlette(
    routes=[
        Route("/hello", _hello, methods=["GET", "HEAD"]),
        Route("/stream", _stream),
        Route("/big", _big),
        Route("/echo", _echo, methods=["POST"]),
    ]
)


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, int]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(APP, lifespan="off", log_level="warning", **UVICORN_OPTIONS)
    srv = uvicorn.Server(config)
    srv.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(srv.serve(sockets=[sock]))
    for _ in range(500):
        if srv.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert srv.started, "the server did not start"
    try:
        yield sock.getsockname()
    finally:
        srv.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


async def read_response(reader: asyncio.StreamReader, *, head: bool = False) -> tuple[bytes, dict[bytes, bytes], bytes]:
    status = await reader.readuntil(b"\r\n")  # raises at the end of the stream
    headers: dict[bytes, bytes] = {}
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.rstrip(b"\r\n").partition(b": ")
        headers[name.lower()] = value
    if head:
        return status, headers, b""
    if headers.get(b"transfer-encoding") == b"chunked":
        parts = []
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        await reader.readexactly(2)
        return status, headers, b"".join(parts)
    return status, headers, await reader.readexactly(int(headers[b"content-length"]))


@contextlib.asynccontextmanager
async def connection(address: tuple[str, int]) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(*address)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_one_keep_alive_connection_carries_every_kind_of_answer(server: tuple[str, int]) -> None:
    async with connection(server) as (reader, writer):
        for _ in range(3):
            writer.write(b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n")
            status, headers, body = await asyncio.wait_for(read_response(reader), 5)
            assert (status, headers[b"content-length"], body) == (b"HTTP/1.1 200 OK\r\n", b"5", b"hello")
        writer.write(b"HEAD /hello HTTP/1.1\r\nhost: x\r\n\r\n")
        status, headers, _ = await asyncio.wait_for(read_response(reader, head=True), 5)
        assert status == b"HTTP/1.1 200 OK\r\n" and headers[b"content-length"] == b"5"
        writer.write(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        status, headers, body = await asyncio.wait_for(read_response(reader), 5)
        assert headers[b"transfer-encoding"] == b"chunked" and body == b"one,two,three"
        writer.write(b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n")  # still usable after all that
        assert (await asyncio.wait_for(read_response(reader), 5))[2] == b"hello"


async def test_a_client_that_does_not_read_holds_back_a_big_body(server: tuple[str, int]) -> None:
    produced.clear()
    async with connection(server) as (reader, writer):
        writer.write(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
        await asyncio.sleep(0.5)  # reading nothing: the server must stop producing
        assert 0 < len(produced) < BIG_CHUNKS // 2
        status, _, body = await asyncio.wait_for(read_response(reader), 30)  # then it all arrives
        assert status == b"HTTP/1.1 200 OK\r\n" and len(body) == BIG_CHUNKS * 65536


async def test_100_continue_is_sent_before_the_body_is(server: tuple[str, int]) -> None:
    async with connection(server) as (reader, writer):
        writer.write(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\nexpect: 100-continue\r\n\r\n")
        # The client sends the body only once told to continue.
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"ping")
        status, _, body = await asyncio.wait_for(read_response(reader), 5)
        assert (status, body) == (b"HTTP/1.1 200 OK\r\n", b"ping")


async def test_connection_close_gets_the_whole_answer_then_the_end(server: tuple[str, int]) -> None:
    async with connection(server) as (reader, writer):
        writer.write(b"GET /hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        status, _, body = await asyncio.wait_for(read_response(reader), 5)
        assert (status, body) == (b"HTTP/1.1 200 OK\r\n", b"hello")
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed after the answer
