"""The fast front's connection handling without sockets: bytes in through an in-memory transport, the
real pipeline behind it on `MemoryTransport` backends, the answers' bytes out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from ollama_proxy.adapters.fast.connection import Connection
from ollama_proxy.adapters.fast.server import FastServer
from ollama_proxy.adapters.http.server import EDGE_KEY, FRONT_KEY
from ollama_proxy.app import build_app
from ollama_proxy.config.load import validate
from ollama_proxy.testing.memory import MemoryRequest, MemoryResponse, MemoryTransport

MODEL = "llama3.2"


def backend(request: MemoryRequest) -> MemoryResponse:
    if request.path == "/api/tags":
        return MemoryResponse.json({"models": [{"name": f"{MODEL}:latest", "digest": "d1"}]})
    if request.path in ("/api/ps", "/api/version"):
        return MemoryResponse.json({"models": [], "version": "0.30.0"})
    if request.path == "/api/show":
        return MemoryResponse.json({"model_info": {"llama.context_length": 131072}})
    if request.path.startswith("/api/blobs/"):
        return MemoryResponse(201, {"X-Received": str(len(request.body))})
    body = request.json() if request.body else {}
    if body.get("stream") is False:
        answer = MemoryResponse.json({"model": MODEL, "response": body.get("prompt", ""), "done": True})
        answer.headers["X-Request-ID"] = "the-backend-s-own-id"  # as llama.cpp's server does
        return answer
    return MemoryResponse.ndjson([{"model": MODEL, "response": "Hi", "done": False},
                                  {"model": MODEL, "response": "", "done": True}])


class MemorySocket(asyncio.Transport):
    """A client connection's server side, in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False
        self.reading = True
        self.protocol: asyncio.BaseProtocol | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += data

    def close(self) -> None:
        if not self.closed and self.protocol is not None:
            self.closed = True
            self.protocol.connection_lost(None)

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self.protocol is not None
        return self.protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 11435)}.get(name, default)

    def get_write_buffer_size(self) -> int:
        return 0


class Client:
    def __init__(self, protocol: asyncio.Protocol) -> None:
        self.socket = MemorySocket()
        self.socket.protocol = protocol
        protocol.connection_made(self.socket)

    def send(self, data: bytes) -> None:
        protocol = self.socket.protocol
        assert isinstance(protocol, asyncio.Protocol)
        protocol.data_received(data)

    async def answers(self, count: int, timeout_s: float = 5.0) -> list[tuple[int, dict[str, str], bytes]]:
        """The first `count` whole answers written so far (waiting for them)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            parsed = parse_answers(bytes(self.socket.out))
            if len(parsed) >= count or loop.time() > deadline:
                return parsed
            await asyncio.sleep(0.01)


def parse_answers(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    out = []
    while raw:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {k.decode().lower(): v.decode().strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
        if status == 100:
            out.append((status, headers, b""))
            raw = rest
            continue
        if "content-length" in headers:
            length = int(headers["content-length"])
            if len(rest) < length:
                break
            body, raw = rest[:length], rest[length:]
        elif headers.get("transfer-encoding") == "chunked":
            body, complete = b"", False
            while True:
                size_line, sep, rest = rest.partition(b"\r\n")
                if not sep:
                    break
                size = int(size_line, 16)
                if size == 0:
                    rest, complete = rest[2:], True
                    break
                body, rest = body + rest[:size], rest[size + 2:]
            if not complete:
                break
            raw = rest
        else:
            body, raw = rest, b""
        out.append((status, headers, body))
    return out


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Any]]:
    runners: list[web.AppRunner] = []

    async def make(**server: Any) -> tuple[Client, FastServer]:
        config = validate({"backends": [{"id": "gpu", "endpoint": "http://gpu.invalid:11434"}],
                           "server": {"engine": "fast", **server}})
        app = build_app(config, transport=MemoryTransport({"gpu": backend}))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        assert runner.server is not None
        fast = FastServer(config, app[FRONT_KEY], app[EDGE_KEY])
        return Client(fast.factory(runner.server)()), fast

    yield make
    for runner in runners:
        await runner.cleanup()


def post(path: str, body: dict[str, Any], *extra: bytes) -> bytes:
    data = orjson.dumps(body)
    return b"POST %b HTTP/1.1\r\nHost: p\r\nContent-Type: application/json\r\n%bContent-Length: %d\r\n\r\n%b" % (
        path.encode(), b"".join(extra), len(data), data)


GENERATE = {"model": MODEL, "prompt": "one", "stream": False}


async def test_keep_alive_serves_requests_one_after_another(connect: Callable[..., Any]) -> None:
    client, _ = await connect()
    client.send(post("/api/generate", GENERATE))
    [(status, headers, body)] = await client.answers(1)
    assert status == 200 and headers["connection"] == "keep-alive" and headers["x-backend-used"] == "gpu"
    assert orjson.loads(body)["response"] == "one"
    client.send(post("/api/generate", {**GENERATE, "prompt": "two"}))
    answers = await client.answers(2)
    assert orjson.loads(answers[1][2])["response"] == "two" and not client.socket.closed


async def test_the_answer_carries_the_client_s_request_id_once_not_the_backend_s(
        connect: Callable[..., Any]) -> None:
    client, _ = await connect()
    client.send(post("/api/generate", GENERATE, b"X-Request-ID: my-own-id\r\n"))
    [(status, headers, _)] = await client.answers(1)
    head = bytes(client.socket.out).partition(b"\r\n\r\n")[0].lower()
    assert status == 200 and headers["x-request-id"] == "my-own-id" and head.count(b"x-request-id:") == 1


async def test_pipelined_requests_are_answered_in_order(connect: Callable[..., Any]) -> None:
    client, _ = await connect()
    client.send(b"".join(post("/api/generate", {**GENERATE, "prompt": word}) for word in ("a", "b", "c")))
    answers = await client.answers(3)
    assert [orjson.loads(body)["response"] for _, _, body in answers] == ["a", "b", "c"]


async def test_a_pipelined_request_for_aiohttp_is_refused_and_the_connection_closed(
        connect: Callable[..., Any]) -> None:
    client, _ = await connect()
    client.send(post("/api/generate", GENERATE) + b"GET /health HTTP/1.1\r\nHost: p\r\n\r\n")
    answers = await client.answers(2)
    assert [status for status, _, _ in answers] == [200, 400]
    assert "pipelined" in orjson.loads(answers[1][2])["error"] and answers[1][1]["connection"] == "close"
    assert client.socket.closed


async def test_a_request_it_does_not_serve_is_handed_to_aiohttp_with_its_bytes(connect: Callable[..., Any]) -> None:
    client, fast = await connect()
    client.send(b"GET /hea")
    client.send(b"lth HTTP/1.1\r\nHost: p\r\n\r\n")
    assert isinstance(client.socket.protocol, RequestHandler)
    assert not fast.connections
    [(status, _, body)] = await client.answers(1)
    assert status == 200 and "backends" in orjson.loads(body)


async def test_a_chunked_body_with_expect_continue(connect: Callable[..., Any]) -> None:
    client, _ = await connect()
    client.send(b"POST /api/generate HTTP/1.1\r\nHost: p\r\nExpect: 100-continue\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
    [(status, _, _)] = await client.answers(1)
    assert status == 100  # asked for before the body was sent
    data = orjson.dumps(GENERATE)
    client.send(b"%x\r\n%b\r\n0\r\n\r\n" % (len(data), data))
    answers = await client.answers(2)
    assert answers[1][0] == 200 and orjson.loads(answers[1][2])["response"] == "one"


async def test_a_stream_is_written_in_chunks(connect: Callable[..., Any]) -> None:
    client, _ = await connect()
    client.send(post("/api/generate", {"model": MODEL, "prompt": "x"}))
    [(status, headers, body)] = await client.answers(1)
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    assert [orjson.loads(line)["done"] for line in body.splitlines()] == [False, True]


async def test_head_gets_headers_only(connect: Callable[..., Any]) -> None:
    client, _ = await connect()
    client.send(b"HEAD /api/tags HTTP/1.1\r\nHost: p\r\n\r\nGET /api/tags HTTP/1.1\r\nHost: p\r\n\r\n")
    raw = bytes(client.socket.out)
    for _ in range(100):
        if raw.count(b"HTTP/1.1 200") == 2:
            break
        await asyncio.sleep(0.01)
        raw = bytes(client.socket.out)
    first, _, rest = raw.partition(b"\r\n\r\n")
    assert rest.startswith(b"HTTP/1.1 200")  # nothing between the HEAD answer's head and the next answer
    assert b"content-length" in first.lower()


async def test_connection_close_is_honoured(connect: Callable[..., Any]) -> None:
    client, _ = await connect()
    client.send(post("/api/generate", GENERATE, b"Connection: close\r\n"))
    [(status, headers, _)] = await client.answers(1)
    assert status == 200 and headers["connection"] == "close"
    await asyncio.sleep(0.01)
    assert client.socket.closed


async def test_a_declared_body_over_the_limit_is_413_before_it_is_read(connect: Callable[..., Any]) -> None:
    client, _ = await connect(max_body_bytes=1024)
    client.send(b"POST /api/chat HTTP/1.1\r\nHost: p\r\nContent-Length: 5000\r\n\r\n")
    [(status, headers, body)] = await client.answers(1)
    assert status == 413 and headers["connection"] == "close" and "max_body_bytes" in orjson.loads(body)["error"]
    assert not client.socket.closed  # still reading the body it refused, so the answer is not reset away
    client.send(b"x" * 5000)
    await asyncio.sleep(0.01)
    assert client.socket.closed


async def test_missing_key_is_401_in_the_routes_shape(connect: Callable[..., Any]) -> None:
    client, _ = await connect(api_keys=["k1"])
    client.send(post("/v1/chat/completions", {"model": MODEL, "messages": []}))
    [(status, _, body)] = await client.answers(1)
    assert status == 401 and orjson.loads(body)["error"]["message"].startswith("missing or invalid API key")


async def test_a_body_that_is_not_json_is_400_and_the_connection_stays(connect: Callable[..., Any]) -> None:
    client, _ = await connect()
    client.send(b"POST /api/chat HTTP/1.1\r\nHost: p\r\nContent-Length: 3\r\n\r\n{x}")
    [(status, headers, body)] = await client.answers(1)
    assert status == 400 and headers["connection"] == "keep-alive"
    assert orjson.loads(body)["error"].startswith("invalid JSON")


async def test_a_blob_upload_is_streamed_on(connect: Callable[..., Any]) -> None:
    client, _ = await connect(max_body_bytes=1024)
    payload = b"GGUF" + b"\0" * 100_000  # over max_body_bytes: uploads are not held, so not limited
    client.send(b"POST /api/blobs/sha256:ab HTTP/1.1\r\nHost: p\r\nContent-Length: %d\r\n\r\n" % len(payload))
    for start in range(0, len(payload), 8192):
        client.send(payload[start:start + 8192])
        await asyncio.sleep(0)
    [(status, headers, _)] = await client.answers(1)
    assert status == 201 and headers["x-received"] == str(len(payload))


async def test_a_new_connection_that_sends_nothing_is_closed_after_the_header_timeout(
        connect: Callable[..., Any]) -> None:
    client, fast = await connect(header_timeout_s=0.05)
    assert isinstance(client.socket.protocol, Connection) and fast.connections
    await asyncio.sleep(0.1)
    assert client.socket.closed and not client.socket.out and not fast.connections


async def test_a_chunked_body_that_breaks_framing_is_a_json_400_and_the_connection_closes(
        connect: Callable[..., Any]) -> None:
    client, _ = await connect()
    client.send(b"POST /api/chat HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"mod\r\nzz\r\n")
    [(status, headers, body)] = await client.answers(1)
    assert status == 400 and headers["connection"] == "close"
    assert orjson.loads(body)["error"].startswith("malformed HTTP request body")
    await asyncio.sleep(0.01)
    assert client.socket.closed


async def test_an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout(
        connect: Callable[..., Any]) -> None:
    client, fast = await connect(keepalive_timeout_s=0.4, header_timeout_s=0.05)
    client.send(post("/api/generate", GENERATE))
    [(status, _, _)] = await client.answers(1)
    assert status == 200
    await asyncio.sleep(0.1)
    assert not client.socket.closed  # past the header timeout, within the keep-alive time
    await asyncio.sleep(0.6)
    assert client.socket.closed and not fast.connections
