"""The fault matrix: each way a backend can misbehave, through the real proxy, with a real client.

For every fault three things are checked:
  (a) what the client sees: a valid reply, or a JSON error it can read, never aiohttp's text/plain 500,
      never a 200 whose body is not JSON, and a broken stream always ends with an error line of its own;
  (b) that the proxy still serves a normal request afterwards;
  (c) that nothing is sent twice once a byte has reached the client (each backend counts what it got).

Wire faults come from `rawbackend.RawBackend`; the simulator's own fault modes from `POST /sim/faults`.
The backend called "faulty" is configured fast and frugal so the router picks it first; "spare" is slow
and hungry, so it is used only by failover (or when a test names it with X-Target-Backend).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest
from rawbackend import HUGE_SIZE, INVALID_OPTION_ERROR, RawBackend, huge_stream_pieces, stream_lines

from ollama_proxy.sim import SimServer

PREFERRED = {"power_watts": 1, "avg_latency_ms": 50}
FALLBACK = {"power_watts": 200, "avg_latency_ms": 5000}
# Short timeouts for the faults that wait for them; a fast health check so a backend marked
# unreachable by a fault is seen as healthy again within a fraction of a second.
TIMEOUTS = {"first_byte_timeout_s": 1.0, "idle_timeout_s": 1.0}
FAST_HEALTH = {"health_interval_s": 0.2}
CLIENT_TIMEOUT_S = 8.0
INFERENCE_PATHS = ("/api/generate", "/api/chat")


# --- fixtures and helpers -------------------------------------------------------------------------

@pytest.fixture
async def raw_factory() -> AsyncIterator[Callable[..., Any]]:
    """Raw-socket backends on demand, each closed (server and connections) after the test."""
    async with contextlib.AsyncExitStack() as stack:
        async def make(mode: str = "normal") -> RawBackend:
            return await stack.enter_async_context(RawBackend(mode))

        yield make


def proxy_config(faulty: str, spare: str | None = None, **router: Any) -> dict[str, Any]:
    backends = [{"id": "faulty", "endpoint": faulty, "characteristics": PREFERRED}]
    if spare is not None:
        backends.append({"id": "spare", "endpoint": spare, "characteristics": FALLBACK})
    return {"backends": backends, "router": {**FAST_HEALTH, **router},
            "system": {"nvidia_smi": "/nonexistent/nvidia-smi"}}


def request_body(path: str, *, stream: bool, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "llama3.2", "stream": stream, **extra}
    if path.endswith("/api/chat"):
        body["messages"] = [{"role": "user", "content": "hello"}]
    else:
        body["prompt"] = "hello"
    return body


def parse(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None


@dataclass
class Reply:
    status: int  # 0: no status line arrived in time
    headers: Mapping[str, str]
    body: bytes
    broken: str | None  # why reading the body failed, None when it ended cleanly
    elapsed_s: float

    def __str__(self) -> str:
        return (f"HTTP {self.status} {self.headers.get('Content-Type')!r} after {self.elapsed_s:.2f}s"
                f"{f' BROKEN ({self.broken})' if self.broken else ''}: {self.body[:300]!r}"
                f"{'...' + repr(self.body[-200:]) if len(self.body) > 300 else ''}")

    @property
    def lines(self) -> list[bytes]:
        return [line for line in self.body.split(b"\n") if line.strip()]


async def send(url: str, path: str, body: Any, *, headers: Mapping[str, str] | None = None,
               timeout_s: float = CLIENT_TIMEOUT_S) -> Reply:
    """POST `body` and read the whole answer; a broken or endless body is reported, not raised."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    started = time.monotonic()
    status, got_headers, chunks, broken = 0, {}, [], None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        try:
            async with session.post(url + path, data=data, headers={"Content-Type": "application/json",
                                                                    **(headers or {})}) as r:
                status, got_headers = r.status, r.headers.copy()
                async for chunk in r.content.iter_any():
                    chunks.append(chunk)
        except aiohttp.ClientPayloadError as exc:
            broken = f"payload error: {exc}"
        except TimeoutError:
            broken = f"no end within {timeout_s}s"
        except aiohttp.ClientConnectionError as exc:
            broken = f"connection error: {exc!r}"
    return Reply(status, got_headers, b"".join(chunks), broken, time.monotonic() - started)


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)) as session, \
            session.get(url) as r:
        assert r.status == 200, await r.text()
        return await r.json()


def assert_valid_reply(reply: Reply, backend: str | None = None) -> dict[str, Any]:
    """A non-streamed 200 whose body is one JSON object, done."""
    assert reply.status == 200 and reply.broken is None, str(reply)
    answer = parse(reply.body)
    assert isinstance(answer, dict) and answer.get("done") is True, str(reply)
    if backend is not None:
        assert reply.headers.get("X-Backend-Used") == backend, str(reply)
    return answer


def assert_json_error(reply: Reply, status: int) -> str:
    """The proxy's own error: the status, `{"error": "..."}` as JSON, and the request id."""
    assert reply.status == status and reply.broken is None, str(reply)
    assert "application/json" in reply.headers.get("Content-Type", ""), str(reply)
    answer = parse(reply.body)
    assert isinstance(answer, dict) and isinstance(answer.get("error"), str) and answer["error"], str(reply)
    assert reply.headers.get("X-Request-ID"), str(reply)
    return answer["error"]


def assert_ends_with_error_line(reply: Reply, *, partial: bytes | None = None) -> str:
    """A 200 stream that ended cleanly with `{"error": ...}` on a line of its own.

    Every line parses as JSON except `partial`, the backend's half line (when it sent one).
    """
    assert reply.status == 200 and reply.broken is None, str(reply)
    assert b'\n{"error"' in reply.body, f"no error object at the start of a line: {reply}"
    last = parse(reply.lines[-1])
    assert isinstance(last, dict) and isinstance(last.get("error"), str), f"last line is no error object: {reply}"
    unparsed = [line for line in reply.lines if parse(line) is None]
    assert unparsed in ([], [partial] if partial else []), f"lines that are not JSON: {unparsed}; {reply}"
    return last["error"]


async def assert_serves(url: str, path: str = "/api/chat", headers: Mapping[str, str] | None = None,
                        backend: str | None = None) -> None:
    """A normal request succeeds; a 503 while the health check has not yet seen the backend recover
    is waited out (a few health intervals)."""
    deadline = time.monotonic() + 5.0
    while True:
        reply = await send(url, path, request_body(path, stream=False), headers=headers)
        if reply.status != 503 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert_valid_reply(reply, backend)


async def backends_status(url: str) -> dict[str, dict[str, Any]]:
    return {b["id"]: b for b in (await get_json(url + "/backends"))["backends"]}


async def sim_fault(sim: SimServer, **fault: Any) -> None:
    # Aimed at inference: with sizing on, the proxy's own /api/show lookups must not draw the fault.
    fault.setdefault("paths", list(INFERENCE_PATHS))
    async with aiohttp.ClientSession() as session, session.post(f"{sim.url}/sim/faults", json=fault) as r:
        assert r.status == 200, await r.text()


async def sim_served(sim: SimServer) -> int:
    """Inference requests the simulator received (health checks and discovery not counted)."""
    requests = (await get_json(f"{sim.url}/sim/stats"))["requests"]
    return sum(requests.get(p, 0) for p in INFERENCE_PATHS)


# --- a body that breaks before the client got a byte ----------------------------------------------

@pytest.mark.parametrize("path", INFERENCE_PATHS)
@pytest.mark.parametrize("mode", ["short_body", "reset_mid_body"])
async def test_body_broken_before_first_byte_fails_over(raw_factory: Callable[..., Any],
                                                        proxy_factory: Callable[..., Any],
                                                        mode: str, path: str) -> None:
    faulty, spare = await raw_factory(mode), await raw_factory()
    url = await proxy_factory(proxy_config(faulty.url, spare.url))
    reply = await send(url, path, request_body(path, stream=False))
    assert_valid_reply(reply, backend="spare")
    assert (faulty.received[path], spare.received[path]) == (1, 1)
    faulty.mode = "normal"
    await assert_serves(url, path)


@pytest.mark.parametrize("mode", ["short_body", "reset_mid_body"])
async def test_body_broken_before_first_byte_alone_is_502_json(raw_factory: Callable[..., Any],
                                                               proxy_factory: Callable[..., Any],
                                                               mode: str) -> None:
    faulty = await raw_factory(mode)
    url = await proxy_factory(proxy_config(faulty.url))
    reply = await send(url, "/api/generate", request_body("/api/generate", stream=False))
    assert_json_error(reply, 502)
    assert faulty.received["/api/generate"] >= 1
    faulty.mode = "normal"
    await assert_serves(url, "/api/generate")


# --- no answer at all ------------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_hang_before_headers_fails_over_after_first_byte_timeout(raw_factory: Callable[..., Any],
                                                                       proxy_factory: Callable[..., Any],
                                                                       stream: bool) -> None:
    faulty, spare = await raw_factory("hang_before_headers"), await raw_factory()
    url = await proxy_factory(proxy_config(faulty.url, spare.url, **TIMEOUTS))
    reply = await send(url, "/api/chat", request_body("/api/chat", stream=stream))
    assert reply.status == 200 and reply.broken is None, str(reply)
    assert reply.headers.get("X-Backend-Used") == "spare", str(reply)
    assert parse(reply.lines[-1])["done"] is True, str(reply)
    assert 0.9 <= reply.elapsed_s < 4.0, f"failover after {reply.elapsed_s:.2f}s, first_byte_timeout_s is 1.0"
    assert (faulty.received["/api/chat"], spare.received["/api/chat"]) == (1, 1)
    faulty.mode = "normal"
    await assert_serves(url)


async def test_hang_before_headers_alone_is_504_json(raw_factory: Callable[..., Any],
                                                     proxy_factory: Callable[..., Any]) -> None:
    faulty = await raw_factory("hang_before_headers")
    url = await proxy_factory(proxy_config(faulty.url, **TIMEOUTS))
    reply = await send(url, "/api/chat", request_body("/api/chat", stream=False))
    assert_json_error(reply, 504)
    assert reply.elapsed_s < 4.0, str(reply)
    faulty.mode = "normal"
    await assert_serves(url)


# --- a stream that breaks after the client got bytes -----------------------------------------------

@pytest.mark.parametrize("path", INFERENCE_PATHS)
async def test_half_line_then_close_ends_with_error_on_its_own_line(raw_factory: Callable[..., Any],
                                                                    proxy_factory: Callable[..., Any],
                                                                    path: str) -> None:
    faulty, spare = await raw_factory("half_line"), await raw_factory()
    url = await proxy_factory(proxy_config(faulty.url, spare.url))
    reply = await send(url, path, request_body(path, stream=True))
    full, cut = stream_lines(path)[:2]
    assert reply.body.startswith(full), str(reply)
    assert_ends_with_error_line(reply, partial=cut[:len(cut) // 2])
    assert (faulty.received[path], spare.received[path]) == (1, 0)  # bytes were out: no second attempt
    faulty.mode = "normal"
    await assert_serves(url, path)


async def test_stall_mid_stream_ends_with_error_after_idle_timeout(raw_factory: Callable[..., Any],
                                                                   proxy_factory: Callable[..., Any]) -> None:
    faulty, spare = await raw_factory("stall_mid_stream"), await raw_factory()
    url = await proxy_factory(proxy_config(faulty.url, spare.url, **TIMEOUTS))
    reply = await send(url, "/api/generate", request_body("/api/generate", stream=True), timeout_s=6.0)
    assert reply.body.startswith(stream_lines("/api/generate")[0]), str(reply)
    assert_ends_with_error_line(reply)
    assert reply.elapsed_s < 4.0, f"stream ended after {reply.elapsed_s:.2f}s, idle_timeout_s is 1.0"
    assert (faulty.received["/api/generate"], spare.received["/api/generate"]) == (1, 0)
    faulty.mode = "normal"
    await assert_serves(url, "/api/generate")


# A client that reads nothing for a while: the proxy must stop reading the backend (backpressure)
# rather than hold what the backend sends meanwhile.
@pytest.mark.parametrize("client_pause_s", [0.0, 1.5], ids=["reading", "slow-client"])
async def test_huge_line_is_relayed_whole_in_bounded_memory(raw_factory: Callable[..., Any],
                                                            proxy_factory: Callable[..., Any],
                                                            client_pause_s: float) -> None:
    faulty, spare = await raw_factory("huge_line"), await raw_factory()
    url = await proxy_factory(proxy_config(faulty.url, spare.url))
    expected, expected_len = hashlib.sha256(), 0
    for piece in huge_stream_pieces():
        expected.update(piece)
        expected_len += len(piece)

    # Peak memory is measured with tracemalloc (every Python allocation made during the transfer,
    # in the proxy, the fake backend and this client alike), not RSS: in a long pytest process the
    # allocator reuses freed memory, so RSS growth would say little. The client hashes the body as
    # it arrives and keeps only the tail, the backend writes one reused 1 MB block: what remains is
    # what the proxy holds. Relaying by reference stays at a few MB; buffering the line costs ~48 MB.
    gc.collect()
    tracemalloc.start()
    try:
        received, size, tail, status = hashlib.sha256(), 0, b"", 0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session, \
                session.post(url + "/api/generate", json=request_body("/api/generate", stream=True)) as r:
            status = r.status
            await asyncio.sleep(client_pause_s)
            async for chunk in r.content.iter_any():
                received.update(chunk)
                size += len(chunk)
                tail = (tail + chunk)[-4096:]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert status == 200
    assert (size, received.hexdigest()) == (expected_len, expected.hexdigest()), (
        f"got {size} bytes, expected {expected_len} (line of {HUGE_SIZE}); tail {tail[-300:]!r}")
    assert parse(tail.rstrip(b"\n").rsplit(b"\n", 1)[-1])["done"] is True
    assert peak < 40e6, f"peak Python memory during the relay {peak / 1e6:.1f} MB for a {HUGE_SIZE / 1e6:.0f} MB line"
    assert (faulty.received["/api/generate"], spare.received["/api/generate"]) == (1, 0)
    faulty.mode = "normal"
    await assert_serves(url, "/api/generate")


# --- a backend's answer that is the request's fault ------------------------------------------------

@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_invalid_option_500_passes_through_unretried_and_breakers_stay_closed(
        raw_factory: Callable[..., Any], proxy_factory: Callable[..., Any], stream: bool) -> None:
    faulty, spare = await raw_factory("server_error_invalid_option"), await raw_factory()
    url = await proxy_factory(proxy_config(faulty.url, spare.url))
    body = request_body("/api/generate", stream=stream, options={"stop": "\n\n"})
    for _ in range(5):
        reply = await send(url, "/api/generate", body)
        assert reply.status == 500 and reply.broken is None, str(reply)
        assert parse(reply.body) == {"error": INVALID_OPTION_ERROR}, str(reply)
    assert (faulty.received["/api/generate"], spare.received["/api/generate"]) == (5, 0)
    status = await backends_status(url)
    assert {b: (s["breaker"], s["consecutive_failures"]) for b, s in status.items()} == {
        "faulty": ("closed", 0), "spare": ("closed", 0)}
    faulty.mode = "normal"
    await assert_serves(url, "/api/generate", backend="faulty")
    await assert_serves(url, "/api/generate", {"X-Target-Backend": "spare"}, backend="spare")


# --- the simulator's fault modes -----------------------------------------------------------------

@pytest.fixture
def sim_pair(sim_factory: Callable[..., Any], proxy_factory: Callable[..., Any]) -> Callable[..., Any]:
    """`url, faulty, spare = await sim_pair(**router)`: the proxy in front of two simulators,
    "faulty" picked first, "spare" for failover."""
    async def make(**router: Any) -> tuple[str, SimServer, SimServer]:
        faulty, spare = await sim_factory(models=["llama3.2"]), await sim_factory(models=["llama3.2"])
        return await proxy_factory(proxy_config(faulty.url, spare.url, **router)), faulty, spare

    return make


@pytest.mark.parametrize("path", INFERENCE_PATHS)
async def test_sim_drop_mid_stream_ends_with_error_line(sim_pair: Callable[..., Any],
                                                        path: str) -> None:
    url, faulty, spare = await sim_pair()
    await sim_fault(faulty, mode="drop_mid_stream", after_chunks=2, count=1)
    reply = await send(url, path, request_body(path, stream=True))
    assert_ends_with_error_line(reply)
    assert len(reply.lines) == 3, str(reply)  # the two lines sent, then the error
    assert (await sim_served(faulty), await sim_served(spare)) == (1, 0)
    await assert_serves(url, path)


async def test_sim_malformed_line_mid_stream_is_relayed_and_the_stream_ends_in_json(
        sim_pair: Callable[..., Any]) -> None:
    url, faulty, spare = await sim_pair()
    await sim_fault(faulty, mode="malformed_line", after_chunks=1, count=1)
    reply = await send(url, "/api/chat", request_body("/api/chat", stream=True))
    assert reply.status == 200 and reply.broken is None, str(reply)
    # Bytes are relayed as they come: the backend's bad line reaches the client, and whatever the
    # proxy makes of it, the stream ends in a JSON line (the backend's done line or an error).
    unparsed = [line for line in reply.lines if parse(line) is None]
    assert unparsed == [b'{"model": "unterminated'], str(reply)
    last = parse(reply.lines[-1])
    assert isinstance(last, dict) and (last.get("done") is True or "error" in last), str(reply)
    assert (await sim_served(faulty), await sim_served(spare)) == (1, 0)
    await assert_serves(url)


@pytest.mark.parametrize("fault", [
    pytest.param({"mode": "error", "status": 500}, id="error-500-generic"),
    pytest.param({"mode": "busy"}, id="busy-503"),
    pytest.param({"mode": "malformed_line"}, id="malformed-whole-body"),
    pytest.param({"mode": "drop_mid_stream"}, id="drop-whole-body"),
])
async def test_sim_fault_before_first_byte_fails_over(sim_pair: Callable[..., Any],
                                                      fault: dict[str, Any]) -> None:
    """A generic 500, Ollama's busy 503, a 200 whose JSON body is cut: the client has nothing yet, so the
    request goes to the spare and the client gets a valid reply (never a 200 that is not JSON)."""
    url, faulty, spare = await sim_pair()
    await sim_fault(faulty, count=1, **fault)
    reply = await send(url, "/api/chat", request_body("/api/chat", stream=False))
    assert_valid_reply(reply, backend="spare")
    assert (await sim_served(faulty), await sim_served(spare)) == (1, 1)
    await assert_serves(url)


async def test_sim_busy_fails_over_and_never_opens_the_breaker(sim_pair: Callable[..., Any]) -> None:
    """Ollama's 503 "server busy" is backpressure from a healthy server: with a breaker that opens on
    the first failure, a busy answer still fails over and leaves the breaker closed."""
    url, faulty, spare = await sim_pair(breaker_failures=1)
    await sim_fault(faulty, mode="busy", count=1)
    assert_valid_reply(await send(url, "/api/chat", request_body("/api/chat", stream=False)), backend="spare")
    assert (await sim_served(faulty), await sim_served(spare)) == (1, 1)
    status = (await backends_status(url))["faulty"]
    assert (status["breaker"], status["consecutive_failures"]) == ("closed", 0)
    await assert_serves(url, headers={"X-Target-Backend": "faulty"}, backend="faulty")


# --- a request the proxy must refuse itself ---------------------------------------------------------

@pytest.mark.parametrize("options", [5, [1, 2], "num_ctx=8192"], ids=["number", "list", "string"])
@pytest.mark.parametrize("path", ["/api/generate", "/proxy-context/auto/api/generate", "/api/chat"])
async def test_options_not_an_object_is_400_and_never_sent(raw_factory: Callable[..., Any],
                                                           proxy_factory: Callable[..., Any],
                                                           path: str, options: Any) -> None:
    backend = await raw_factory()
    url = await proxy_factory(proxy_config(backend.url))
    reply = await send(url, path, request_body(path, stream=False, options=options))
    assert "options" in assert_json_error(reply, 400)
    assert backend.inference_requests == 0
    await assert_serves(url, path)
