"""The pipeline driven through the in-memory transport: no sockets, every backend a Python function."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest

from ollama_proxy.config.load import validate
from ollama_proxy.core.ollama_api import SizeMode
from ollama_proxy.core.operations import Dialect, Operation
from ollama_proxy.core.routing.state import RouteRequest
from ollama_proxy.core.streams import END_OF_STREAM, StreamFailure
from ollama_proxy.errors import UpstreamConnectError, UpstreamError
from ollama_proxy.service.context import ContextService
from ollama_proxy.service.listings import Listings
from ollama_proxy.service.pipeline import Pipeline
from ollama_proxy.service.pool import BackendPool
from ollama_proxy.service.reply import Call, Framing, Piece, Reply
from ollama_proxy.service.router import Router
from ollama_proxy.service.tasks import TaskSet
from ollama_proxy.testing.memory import MemoryRequest, MemoryResponse, MemoryTransport

MODEL = "llama3.2"
FINAL = {"model": MODEL, "response": "", "done": True, "done_reason": "stop", "prompt_eval_count": 12,
         "eval_count": 3, "eval_duration": 30_000_000, "load_duration": 1_000_000}


def ollama(inference: Callable[[MemoryRequest], MemoryResponse] | None = None) -> Callable[..., MemoryResponse]:
    """A fake Ollama with MODEL: control calls answered, inference by `inference` (default: a short stream)."""

    def handle(request: MemoryRequest) -> MemoryResponse:
        if request.path == "/api/version":
            return MemoryResponse.json({"version": "0.30.0"})
        if request.path == "/api/tags":
            return MemoryResponse.json({"models": [{"name": f"{MODEL}:latest", "digest": "d1"}]})
        if request.path == "/api/ps":
            return MemoryResponse.json({"models": []})
        if request.path == "/api/show":
            return MemoryResponse.json({"model_info": {"llama.context_length": 131072}})
        if inference is not None:
            return inference(request)
        return MemoryResponse.ndjson([{"model": MODEL, "response": "Hi", "done": False}, FINAL])

    return handle


class Parts:
    def __init__(self, transport: MemoryTransport, pool: BackendPool, router: Router, pipeline: Pipeline,
                 tasks: TaskSet) -> None:
        self.transport, self.pool, self.router, self.pipeline, self.tasks = transport, pool, router, pipeline, tasks
        self.failures: list[str] = []

    def sent(self, backend: str, path: str = "/api/generate") -> list[MemoryRequest]:
        return [r for r in self.transport.requests if r.backend_id == backend and r.path == path]


@pytest.fixture
async def parts() -> AsyncIterator[Callable[..., Any]]:
    made: list[Parts] = []

    async def make(handlers: dict[str, Callable[..., MemoryResponse]], **config: Any) -> Parts:
        cfg = validate({"backends": [
            {"id": name, "endpoint": f"http://{name}.invalid:11434",
             # The first backend is the router's clear pick: failover tests break it.
             "characteristics": {"max_concurrent": 1, "avg_latency_ms": 100 if i == 0 else 5000,
                                 "power_watts": 10}}
            for i, name in enumerate(handlers)], "router": {"max_failover": 1}, **config})
        tasks = TaskSet()
        transport = MemoryTransport(handlers)
        pool = BackendPool(cfg.backends, cfg.router, transport, tasks)
        router = Router(cfg, pool, None, rng=random.Random(0))
        failures: list[str] = []
        pipeline = Pipeline(cfg, pool, router, ContextService(cfg.context, pool, tasks), Listings(pool),
                            on_failure=failures.append)
        await pool.start()
        made.append(Parts(transport, pool, router, pipeline, tasks))
        made[-1].failures = failures
        return made[-1]

    yield make
    for p in made:
        await p.pool.close()
        await p.tasks.cancel_all()


def generate(*, stream: bool = True, size: SizeMode = SizeMode.PASSTHROUGH, target: str | None = None,
             **extra: Any) -> Call:
    body = {"model": MODEL, "prompt": "Why is the sky blue? " * 20, "stream": stream, **extra}
    return Call(operation=Operation.GENERATE, dialect=Dialect.OLLAMA, method="POST", path="/api/generate",
                request_id="r-1", model=MODEL, hints=RouteRequest(target=target), size_mode=size,
                body=body, raw_body=orjson.dumps(body))


async def drain(reply: Reply) -> list[Piece]:
    assert reply.stream is not None
    return [piece async for piece in reply.stream]


async def answered(pipeline: Pipeline, call: Call, read: Callable[[Reply], Any] | None = None) -> tuple[Reply, Any]:
    """What a front does with a call: its reply, and what `read` made of it while the pipeline held it."""
    async def respond(reply: Reply) -> tuple[Reply, Any]:
        return reply, await read(reply) if read is not None else None

    return await pipeline.run(call, respond)


class ListSink:
    """A front's sink that is full after every piece, so that each one waits for `drain`."""

    def __init__(self) -> None:
        self.pieces: list[Piece] = []
        self.drained = 0

    def write(self, data: bytes) -> bool:
        self.pieces.append(data)
        return False

    async def drain(self) -> None:
        self.drained += 1


async def piped(reply: Reply) -> list[Piece]:
    """The reply as a front with a sink takes it (`Reply.pipe`): what was written, then the failure if any."""
    assert reply.pipe is not None
    sink = ListSink()
    failure = await reply.pipe(sink)
    assert sink.drained == len(sink.pieces)
    return [*sink.pieces, *([failure] if failure is not None else [])]


# A relayed stream read piece by piece (the aiohttp front, WebSocket, gRPC) and piped (the fast front).
READERS = pytest.mark.parametrize("read", [drain, piped], ids=["pieces", "piped"])


async def test_auto_sizing_writes_num_ctx_into_what_is_sent(parts: Callable[..., Any]) -> None:
    p = await parts({"gpu": ollama()})
    reply, _ = await answered(p.pipeline, generate(size=SizeMode.AUTO), drain)
    [sent] = p.sent("gpu")
    assert reply.record.sizing is not None
    assert sent.json()["options"]["num_ctx"] == reply.record.sizing.num_ctx == 2048
    # Nothing else in the body changed.
    assert {k: v for k, v in sent.json().items() if k != "options"} == generate().body


async def test_passthrough_sends_the_clients_bytes_untouched(parts: Callable[..., Any]) -> None:
    p = await parts({"gpu": ollama()})
    call = generate()
    reply, pieces = await answered(p.pipeline, call, drain)
    assert p.sent("gpu")[0].body == call.raw_body
    assert reply.framing is Framing.NDJSON and reply.record.sizing is None
    assert b"".join(p for p in pieces if isinstance(p, bytes)).count(b"\n") == 2


async def test_a_target_hint_routes_there(parts: Callable[..., Any]) -> None:
    p = await parts({"a": ollama(), "b": ollama()})
    reply, _ = await answered(p.pipeline, generate(target="b"), drain)
    assert reply.record.backend_id == "b" and len(p.sent("b")) == 1 and not p.sent("a")


async def test_failover_before_the_first_byte(parts: Callable[..., Any]) -> None:
    def down(request: MemoryRequest) -> MemoryResponse:
        raise UpstreamConnectError("a", "connection refused")

    p = await parts({"a": ollama(down), "b": ollama()})
    reply, _ = await answered(p.pipeline, generate(stream=False))
    assert reply.status == 200 and reply.record.backend_id == "b"
    assert reply.record.routing is not None and "a" not in reply.record.routing.alternatives
    assert len(p.sent("a")) == 1 and len(p.sent("b")) == 1
    assert p.pool.backends["a"].breaker.consecutive_failures == 1


@READERS
async def test_a_stream_broken_after_its_first_byte_ends_with_a_failure_and_is_not_sent_again(
        parts: Callable[..., Any], read: Callable[[Reply], Any]) -> None:
    async def dies() -> AsyncIterator[bytes]:
        yield orjson.dumps({"model": MODEL, "response": "Hi", "done": False}) + b"\n"
        yield b'{"model": "llama3.2", "resp'
        raise UpstreamConnectError("a", "reply broke off mid-body")

    p = await parts({"a": ollama(lambda r: MemoryResponse.ndjson(dies())), "b": ollama()})
    reply, pieces = await answered(p.pipeline, generate(), read)
    assert pieces[:2] == [b'{"model":"llama3.2","response":"Hi","done":false}\n', b'{"model": "llama3.2", "resp']
    assert isinstance(pieces[-1], StreamFailure) and pieces[-1].open_line
    assert "broke off" in pieces[-1].reason
    assert reply.record.failure == pieces[-1].reason and p.failures == ["stream_broken"]
    assert not p.sent("b")
    assert p.pool.backends["a"].breaker.consecutive_failures == 1


@READERS
async def test_a_finished_answer_is_learned_from(parts: Callable[..., Any], read: Callable[[Reply], Any]) -> None:
    p = await parts({"gpu": ollama()})
    _, pieces = await answered(p.pipeline, generate(), read)
    assert len(pieces) == 2 and all(type(piece) is bytes for piece in pieces)
    learned = p.router.latency.for_backend("gpu")
    assert f"{MODEL}:latest" in learned and learned[f"{MODEL}:latest"].tokens_per_s == pytest.approx(100.0)


async def test_a_500_the_request_caused_is_relayed_not_retried(parts: Callable[..., Any]) -> None:
    def invalid(request: MemoryRequest) -> MemoryResponse:
        return MemoryResponse.json({"error": 'option "stop" must be of type array'}, status=500)

    p = await parts({"a": ollama(invalid), "b": ollama()})
    reply, _ = await answered(p.pipeline, generate(stream=False))
    assert reply.status == 500 and b"must be of type array" in (reply.body or b"")
    assert not p.sent("b") and p.pool.backends["a"].breaker.consecutive_failures == 0


async def test_the_admission_slot_is_held_while_draining_and_released_on_cancel(parts: Callable[..., Any]) -> None:
    release = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield orjson.dumps({"model": MODEL, "response": "Hi", "done": False}) + b"\n"
        await release.wait()
        yield orjson.dumps(FINAL) + b"\n"

    p = await parts({"gpu": ollama(lambda r: MemoryResponse.ndjson(slow()))})
    queue = p.pool.backends["gpu"].gate.queue
    draining = asyncio.Event()

    async def read(reply: Reply) -> None:
        assert reply.stream is not None
        async for _ in reply.stream:
            draining.set()

    async def client() -> None:
        await p.pipeline.run(generate(), read)

    task = asyncio.create_task(client())
    await draining.wait()
    assert queue.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert queue.in_flight == 0
    assert p.pool.backends["gpu"].breaker.consecutive_failures == 0  # a client leaving is not the backend's fault


async def test_an_openai_call_is_translated_sized_and_its_stream_is_events(parts: Callable[..., Any]) -> None:
    def chat(request: MemoryRequest) -> MemoryResponse:
        return MemoryResponse.ndjson([{"model": MODEL, "message": {"role": "assistant", "content": "Hi"},
                                       "done": False},
                                      {**FINAL, "message": {"role": "assistant", "content": ""}}])

    p = await parts({"gpu": ollama(chat)})
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "stream": True}
    call = Call(operation=Operation.CHAT, dialect=Dialect.OPENAI, method="POST", path="/v1/chat/completions",
                request_id="r-2", model=MODEL, size_mode=SizeMode.AUTO, body=body, raw_body=orjson.dumps(body))
    reply, pieces = await answered(p.pipeline, call, drain)
    [sent] = p.sent("gpu", "/api/chat")
    assert sent.json()["options"]["num_ctx"] == 2048
    assert reply.framing is Framing.SSE and pieces[-1] is END_OF_STREAM
    contents = [e["choices"][0]["delta"].get("content") for e in pieces if isinstance(e, dict) and e["choices"]]
    assert "Hi" in contents


async def test_a_whole_reply_that_breaks_fails_over(parts: Callable[..., Any]) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b'{"model": "llama3.2", "respo'
        raise UpstreamError("a", "reply broke off mid-body")

    def half(request: MemoryRequest) -> MemoryResponse:
        return MemoryResponse(200, {"Content-Type": "application/json"}, broken())

    p = await parts({"a": ollama(half), "b": ollama(lambda r: MemoryResponse.json(FINAL))})
    reply, _ = await answered(p.pipeline, generate(stream=False))
    assert reply.status == 200 and reply.record.backend_id == "b" and orjson.loads(reply.body or b"")["done"]
