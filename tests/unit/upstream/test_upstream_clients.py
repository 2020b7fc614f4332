"""Both upstream clients (raw and aiohttp) against loopback servers that misbehave precisely: the same
answers, the same `UpstreamError`s, the same keep-alive rules.

These are the only unit tests with sockets: what is tested is how a client meets a real TCP peer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from scripted_backends import Conversation, Scripted, answer_each, response

from ollama_proxy.adapters.upstream.aiohttp_client import AiohttpBackendClient
from ollama_proxy.adapters.upstream.raw_client import RawBackendClient
from ollama_proxy.errors import UpstreamConnectError, UpstreamError, UpstreamTimeout
from ollama_proxy.service.transport import ERROR_BODY_LIMIT, BackendClient

CLIENTS = {"raw": RawBackendClient, "aiohttp": AiohttpBackendClient}
Factory = Callable[..., Any]


@pytest.fixture(params=sorted(CLIENTS))
async def client_factory(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    """`await client_factory(backend, first_byte_timeout_s=..., ...)`: a started client, closed after the test."""
    made: list[BackendClient] = []

    async def make(backend: Scripted, **timeouts: float) -> BackendClient:
        timeouts.setdefault("connect_timeout_s", 2.0)
        client: BackendClient = CLIENTS[request.param]("test", backend.url, **timeouts)
        await client.start()
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


async def serve(script: Callable[[Conversation], Any]) -> Scripted:
    return await Scripted(script).__aenter__()


@pytest.fixture
async def backend_factory() -> AsyncIterator[Callable[..., Any]]:
    started: list[Scripted] = []

    async def make(script: Callable[[Conversation], Any]) -> Scripted:
        started.append(await serve(script))
        return started[-1]

    yield make
    for backend in started:
        await backend.__aexit__()


async def body_of(client: BackendClient, method: str = "POST", path: str = "/api/chat", **kw: Any) -> bytes:
    async with client.open(method, path, **kw) as reply:
        assert reply.status == 200
        return await reply.read(1 << 24)


async def pieces_until_error(client: BackendClient, settle_s: float = 0.0, *,
                             piped: bool = False) -> tuple[list[bytes], UpstreamError]:
    """Read (or `pipe`) until the body fails; first wait `settle_s`, so that the data and the break both
    arrive first."""
    got: list[bytes] = []
    async with client.open("POST", "/api/generate", body=b"{}") as reply:
        await asyncio.sleep(settle_s)
        with pytest.raises(UpstreamError) as caught:
            if piped:
                await reply.pipe(lambda data: got.append(data) is None, asyncio.sleep)
            while chunk := await reply.readany():
                got.append(chunk)
    return got, caught.value


PIPED = pytest.mark.parametrize("piped", [False, True], ids=["readany", "pipe"])


# --- keep-alive ------------------------------------------------------------------------------------

async def test_keep_alive_reuses_one_connection(backend_factory: Callable[..., Any], client_factory: Factory) -> None:
    backend = await backend_factory(answer_each)
    client = await client_factory(backend)
    for _ in range(3):
        assert await body_of(client, body=b'{"a":1}') == b'{"ok":true}'
    assert backend.connections == 1
    assert [r.body for r in backend.requests] == [b'{"a":1}'] * 3


async def test_connection_close_is_honoured(backend_factory: Callable[..., Any], client_factory: Factory) -> None:
    async def says_close(talk: Conversation) -> None:
        while await talk.request() is not None:
            await talk.send(response(b"{}", headers="Connection: close\r\n"))  # ... and keeps the socket open

    backend = await backend_factory(says_close)
    client = await client_factory(backend)
    for _ in range(2):
        assert await body_of(client) == b"{}"
    assert backend.connections == 2


async def test_a_reply_not_read_to_its_end_is_not_pooled(backend_factory: Callable[..., Any],
                                                         client_factory: Factory) -> None:
    async def chunks_then_waits(talk: Conversation) -> None:
        while await talk.request() is not None:
            await talk.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
            if talk.number == 1:
                await talk.reader.read()  # the rest never comes: the client must give this connection up
            await talk.send(b"0\r\n\r\n")

    backend = await backend_factory(chunks_then_waits)
    client = await client_factory(backend)
    async with client.open("GET", "/api/tags") as reply:
        assert await reply.readany() == b"abc"
    assert await body_of(client, "GET", "/api/tags") == b"abc"
    assert backend.connections == 2


async def test_a_stale_pooled_connection_is_retried_once_on_a_fresh_one(backend_factory: Callable[..., Any],
                                                                        client_factory: Factory) -> None:
    async def answers_once_then_hangs_up(talk: Conversation) -> None:
        await talk.request()
        await talk.send(response(b"first"))
        if talk.number == 1:
            await talk.request()  # the second request arrives on the pooled connection: closed unanswered
            return
        await answer_each(talk)

    backend = await backend_factory(answers_once_then_hangs_up)
    client = await client_factory(backend)
    assert await body_of(client, body=b"1") == b"first"
    assert await body_of(client, body=b"2") == b"first"
    assert backend.connections == 2
    assert [r.body for r in backend.requests] == [b"1", b"2", b"2"]


async def test_a_streamed_body_is_never_sent_twice(backend_factory: Callable[..., Any],
                                                   client_factory: Factory) -> None:
    async def answers_once_then_hangs_up(talk: Conversation) -> None:
        await talk.request()
        await talk.send(response(b"first"))
        await talk.request()

    async def upload() -> AsyncIterator[bytes]:
        yield b"blob"

    backend = await backend_factory(answers_once_then_hangs_up)
    client = await client_factory(backend)
    assert await body_of(client, body=b"1") == b"first"
    with pytest.raises(UpstreamConnectError):
        await body_of(client, body=upload())
    assert backend.connections == 1


# --- framing -------------------------------------------------------------------------------------------

async def test_chunked_with_extensions_and_trailers(backend_factory: Callable[..., Any],
                                                    client_factory: Factory) -> None:
    async def chunked(talk: Conversation) -> None:
        while await talk.request() is not None:
            await talk.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n"
                            b"6;name=value\r\n{\"a\":1\r\n3;x\r\n}\n\n\r\n0\r\nX-Trailer: t\r\n\r\n")

    backend = await backend_factory(chunked)
    client = await client_factory(backend)
    async with client.open("POST", "/api/chat", body=b"{}") as reply:
        assert reply.is_chunked and reply.content_length is None and not reply.is_sse
        assert await reply.read(1000) == b'{"a":1}\n\n'
    assert await body_of(client, body=b"{}") == b'{"a":1}\n\n'
    assert backend.connections == 1


async def test_interim_1xx_responses_are_passed_over(backend_factory: Callable[..., Any],
                                                     client_factory: Factory) -> None:
    async def early_hints(talk: Conversation) -> None:
        while await talk.request() is not None:
            await talk.send(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n",
                            response(b"final"))

    backend = await backend_factory(early_hints)
    client = await client_factory(backend)
    for _ in range(2):
        async with client.open("POST", "/api/chat", body=b"{}") as reply:
            assert reply.status == 200 and "Link" not in reply.headers
            assert await reply.read(100) == b"final"
    assert backend.connections == 1


async def test_a_body_delimited_by_close_ends_with_it(backend_factory: Callable[..., Any],
                                                      client_factory: Factory) -> None:
    async def until_close(talk: Conversation) -> None:
        await talk.request()
        await talk.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")

    backend = await backend_factory(until_close)
    client = await client_factory(backend)
    assert await body_of(client) == b"all of it"


async def test_head_has_no_body_and_keeps_the_connection(backend_factory: Callable[..., Any],
                                                          client_factory: Factory) -> None:
    async def head_then_get(talk: Conversation) -> None:
        while (request := await talk.request()) is not None:
            await talk.send(response(b"12345")[:-5] if request.method == "HEAD" else response(b"12345"))

    backend = await backend_factory(head_then_get)
    client = await client_factory(backend)
    async with client.open("HEAD", "/") as reply:
        assert reply.headers["content-length"] == "5"
        assert await reply.read(100) == b""
    assert await body_of(client, "GET", "/") == b"12345"
    assert backend.connections == 1


async def test_headers_are_case_insensitive_and_repeats_kept(backend_factory: Callable[..., Any],
                                                             client_factory: Factory) -> None:
    async def cookies(talk: Conversation) -> None:
        await talk.request()
        await talk.send(response(b"{}", headers="Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
                                                "Content-Type: text/event-stream\r\n"))

    backend = await backend_factory(cookies)
    client = await client_factory(backend)
    async with client.open("GET", "/") as reply:
        assert reply.headers.get("set-cookie") == "a=1" and reply.headers["SET-COOKIE"] == "a=1"
        assert [v for k, v in reply.headers.items() if k.lower() == "set-cookie"] == ["a=1", "b=2"]
        assert reply.content_length == 2


async def test_an_event_stream_is_told_apart(backend_factory: Callable[..., Any], client_factory: Factory) -> None:
    async def events(talk: Conversation) -> None:
        while (request := await talk.request()) is not None:
            kind = "text/event-stream; charset=utf-8" if request.target == "/v1/chat/completions" else "text/plain"
            await talk.send(f"HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ncontent-length: 6\r\n\r\n".encode(),
                            b"data:\n")

    backend = await backend_factory(events)
    client = await client_factory(backend)
    for path, sse in (("/v1/chat/completions", True), ("/api/chat", False)):
        async with client.open("POST", path, body=b"{}") as reply:
            assert (reply.is_sse, await reply.read(100)) == (sse, b"data:\n")


async def test_readany_hands_over_each_piece_as_it_arrives(backend_factory: Callable[..., Any],
                                                           client_factory: Factory) -> None:
    go_on = asyncio.Event()

    async def paced(talk: Conversation) -> None:
        await talk.request()
        await talk.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await go_on.wait()
        await talk.send(b"6\r\nsecond\r\n0\r\n\r\n")

    backend = await backend_factory(paced)
    client = await client_factory(backend)
    async with client.open("POST", "/api/generate", body=b"{}") as reply:
        assert await reply.readany() == b"first"
        go_on.set()
        assert await reply.readany() == b"second"
        assert await reply.readany() == b""


async def test_pipe_hands_over_each_piece_and_reads_nothing_while_the_receiver_is_full(
        backend_factory: Callable[..., Any], client_factory: Factory) -> None:
    go_on, drained = asyncio.Event(), asyncio.Event()

    async def paced(talk: Conversation) -> None:
        await talk.request()
        await talk.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await go_on.wait()
        await talk.send(b"6\r\nsecond\r\n0\r\n\r\n")

    got: list[bytes] = []

    def deliver(data: bytes) -> bool:
        got.append(data)
        go_on.set()
        return len(got) > 1  # full after the first piece

    backend = await backend_factory(paced)
    client = await client_factory(backend)
    async with client.open("POST", "/api/generate", body=b"{}") as reply:
        piping = asyncio.ensure_future(reply.pipe(deliver, drained.wait))
        await asyncio.sleep(0.2)  # "second" has arrived by now, but nobody may read it
        assert got == [b"first"] and not piping.done()
        drained.set()
        await asyncio.wait_for(piping, 2)
    assert got == [b"first", b"second"]
    assert await body_of(client) == b"firstsecond"  # and the next exchange is served as usual


async def test_pipe_is_not_silence_while_pieces_keep_coming(backend_factory: Callable[..., Any],
                                                            client_factory: Factory) -> None:
    async def trickles(talk: Conversation) -> None:
        await talk.request()
        await talk.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(6):
            await talk.send(b"4\r\ntick\r\n")
            await asyncio.sleep(0.1)
        await talk.send(b"0\r\n\r\n")

    backend = await backend_factory(trickles)
    client = await client_factory(backend, idle_timeout_s=0.25)
    got: list[bytes] = []
    async with client.open("POST", "/api/generate", body=b"{}") as reply:
        await reply.pipe(lambda data: got.append(data) is None, asyncio.sleep)
    assert b"".join(got) == b"tick" * 6


async def test_a_large_body_streams_through_in_order(backend_factory: Callable[..., Any],
                                                     client_factory: Factory) -> None:
    block = bytes(range(256)) * 4096  # 1 MiB

    async def large(talk: Conversation) -> None:
        await talk.request()
        await talk.send(response(block * 4))

    backend = await backend_factory(large)
    client = await client_factory(backend)
    assert await body_of(client) == block * 4


# --- request bodies ------------------------------------------------------------------------------------

async def test_a_streamed_body_goes_chunked_or_with_its_given_length(backend_factory: Callable[..., Any],
                                                                     client_factory: Factory) -> None:
    async def upload() -> AsyncIterator[bytes]:
        for piece in (b"blob ", b"", b"bytes"):
            yield piece

    backend = await backend_factory(answer_each)
    client = await client_factory(backend)
    await body_of(client, path="/api/blobs/sha256:00", body=upload())
    await body_of(client, path="/api/blobs/sha256:00", body=upload(), headers=(("Content-Length", "10"),))
    chunked, sized = backend.requests
    assert (chunked.body, chunked.headers.get("transfer-encoding")) == (b"blob bytes", "chunked")
    assert (sized.body, sized.headers.get("content-length"), "transfer-encoding" in sized.headers) == (
        b"blob bytes", "10", False)


# --- failures ------------------------------------------------------------------------------------------

@PIPED
async def test_data_before_a_break_mid_body_comes_before_the_error(backend_factory: Callable[..., Any],
                                                                   client_factory: Factory, piped: bool) -> None:
    async def short(talk: Conversation) -> None:
        await talk.request()
        await talk.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nten bytes!")

    backend = await backend_factory(short)
    client = await client_factory(backend)
    got, error = await pieces_until_error(client, settle_s=0.2, piped=piped)
    assert b"".join(got) == b"ten bytes!"
    assert isinstance(error, UpstreamConnectError) and "broke off mid-body" in str(error)


@PIPED
async def test_half_a_chunk_then_close_hands_over_the_half(backend_factory: Callable[..., Any],
                                                           client_factory: Factory, piped: bool) -> None:
    async def half(talk: Conversation) -> None:
        await talk.request()
        await talk.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nline\r\n8\r\nhalf")

    backend = await backend_factory(half)
    client = await client_factory(backend)
    got, error = await pieces_until_error(client, settle_s=0.2, piped=piped)
    assert b"".join(got) == b"linehalf"
    assert isinstance(error, UpstreamConnectError)


async def test_close_before_headers_is_a_connect_error(backend_factory: Callable[..., Any],
                                                       client_factory: Factory) -> None:
    async def hangs_up(talk: Conversation) -> None:
        await talk.request()

    backend = await backend_factory(hangs_up)
    client = await client_factory(backend)
    with pytest.raises(UpstreamConnectError, match="closed the connection before answering"):
        await body_of(client, body=b"{}")
    # The raw client tries again only where a stale pooled connection may be the cause; aiohttp, whose
    # pool does not say, tries any connection twice.
    assert backend.connections == (1 if isinstance(client, RawBackendClient) else 2)


async def test_garbage_instead_of_http_is_an_invalid_response(backend_factory: Callable[..., Any],
                                                              client_factory: Factory) -> None:
    async def garbage(talk: Conversation) -> None:
        await talk.request()
        await talk.send(b"SMTP ready\r\n\r\n")
        await talk.reader.read()

    backend = await backend_factory(garbage)
    client = await client_factory(backend)
    with pytest.raises(UpstreamError) as caught:
        await body_of(client)
    assert type(caught.value) in (UpstreamError, UpstreamConnectError)


async def test_slow_headers_time_out(backend_factory: Callable[..., Any], client_factory: Factory) -> None:
    async def slow(talk: Conversation) -> None:
        await talk.request()
        await talk.send(b"HTTP/1.1 200 OK\r\n")
        await asyncio.sleep(2)

    backend = await backend_factory(slow)
    client = await client_factory(backend, first_byte_timeout_s=0.2)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout, match=r"first_byte_timeout_s=0\.2"):
        await body_of(client)
    assert time.monotonic() - started < 1.5


@PIPED
async def test_silence_mid_body_times_out(backend_factory: Callable[..., Any], client_factory: Factory,
                                          piped: bool) -> None:
    async def stalls(talk: Conversation) -> None:
        await talk.request()
        await talk.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n")
        await talk.reader.read()

    backend = await backend_factory(stalls)
    client = await client_factory(backend, idle_timeout_s=0.2)
    started = time.monotonic()
    got, error = await pieces_until_error(client, piped=piped)
    assert got == [b"one"]
    assert isinstance(error, UpstreamTimeout) and "idle_timeout_s=0.2" in str(error)
    assert time.monotonic() - started < 1.5


async def test_nothing_listening_is_unreachable(client_factory: Factory) -> None:
    backend = await serve(answer_each)
    client = await client_factory(backend)
    await backend.__aexit__()  # the port is free again: nothing listens there
    with pytest.raises(UpstreamConnectError, match="cannot reach"):
        await body_of(client)


async def test_an_error_body_is_capped_and_its_connection_dropped(backend_factory: Callable[..., Any],
                                                                  client_factory: Factory) -> None:
    async def long_error(talk: Conversation) -> None:
        if talk.number == 1:  # more than the kernel's buffers hold: most of it is still to come when the cap is hit
            await talk.request()
            await talk.send(response(b"e" * (64 * ERROR_BODY_LIMIT), status="500 Internal Server Error"))
        await answer_each(talk)

    backend = await backend_factory(long_error)
    client = await client_factory(backend)
    async with client.open("POST", "/api/chat", body=b"{}") as reply:
        assert reply.status == 500
        assert await reply.read_error_body() == b"e" * ERROR_BODY_LIMIT
        assert await reply.read_error_body() == b"e" * ERROR_BODY_LIMIT  # remembered
    assert await body_of(client) == b'{"ok":true}'
    assert backend.connections == 2


async def test_a_reply_over_the_limit_is_refused(backend_factory: Callable[..., Any], client_factory: Factory) -> None:
    async def big(talk: Conversation) -> None:
        await talk.request()
        await talk.send(response(b"x" * 5000))

    backend = await backend_factory(big)
    client = await client_factory(backend)
    async with client.open("GET", "/") as reply:
        with pytest.raises(UpstreamError, match="4096-byte limit"):
            await reply.read(4096)


# --- the control plane -----------------------------------------------------------------------------

async def test_get_json(backend_factory: Callable[..., Any], client_factory: Factory) -> None:
    async def control(talk: Conversation) -> None:
        while (request := await talk.request()) is not None:
            if request.target == "/api/show":
                await talk.send(response(b'{"shown":' + request.body + b"}"))
            elif request.target == "/api/broken":
                await talk.send(response(b"oops", status="500 Internal Server Error"))
            elif request.target == "/api/slow":
                await asyncio.sleep(2)
            else:
                await talk.send(response(b"not json"))

    backend = await backend_factory(control)
    client = await client_factory(backend)
    assert await client.get_json("/api/show", timeout_s=2, method="POST", body={"model": "m"}) == {
        "shown": {"model": "m"}}
    assert backend.requests[0].headers["content-type"] == "application/json"
    with pytest.raises(UpstreamError, match="answered 500: oops"):
        await client.get_json("/api/broken", timeout_s=2)
    with pytest.raises(UpstreamError, match="non-JSON"):
        await client.get_json("/api/tags", timeout_s=2)
    with pytest.raises(UpstreamTimeout):
        await client.get_json("/api/slow", timeout_s=0.2)
