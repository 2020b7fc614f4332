"""The WebSocket front end to end: the `websockets` client against the real proxy in front of simulators.

What reached the simulator is read from its `/sim/stats` (`last_body`, `cancelled`, `loaded`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import tracemalloc
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from ollama_proxy.adapters.http.server import WEBSOCKET_KEY
from ollama_proxy.adapters.websocket.front import MAX_REQUESTS_PER_SOCKET
from ollama_proxy.app import bound_port, drain, start
from ollama_proxy.config.load import validate
from ollama_proxy.sim import SimServer

PATH = "/v1/stream/ws"
TIMEOUT_S = 20.0


def ws_url(http_url: str) -> str:
    return http_url.replace("http://", "ws://", 1) + PATH


async def sim_stats(sim: SimServer) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{sim.url}/sim/stats") as r:
        return dict(await r.json())


async def sim_fault(sim: SimServer, **fault: Any) -> None:
    async with aiohttp.ClientSession() as session, session.post(f"{sim.url}/sim/faults", json=fault) as r:
        assert r.status == 200, await r.text()


async def eventually(predicate: Callable[[], Any], what: str, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Socket:
    """A client connection whose answers are sorted by request id as they arrive."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.arrived: list[dict[str, Any]] = []  # every answer, in arrival order
        self._by_id: dict[str | None, list[dict[str, Any]]] = defaultdict(list)

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(message if isinstance(message, str | bytes) else json.dumps(message))

    async def answer(self, request_id: str | None) -> list[dict[str, Any]]:
        """Every message for `request_id` up to its last one (final, cancelled or error)."""
        async with asyncio.timeout(TIMEOUT_S):
            while not self._by_id[request_id] or not _is_last(self._by_id[request_id][-1]):
                message = json.loads(await self.ws.recv())
                self.arrived.append(message)
                self._by_id[message.get("request_id")].append(message)
        return self._by_id.pop(request_id)

    async def ask(self, **message: Any) -> list[dict[str, Any]]:
        await self.send(message)
        return await self.answer(message.get("request_id"))

    async def error(self, message: dict[str, Any] | str | bytes) -> dict[str, Any]:
        """Send something refused: the one answer it gets."""
        await self.send(message)
        async with asyncio.timeout(TIMEOUT_S):
            answer = json.loads(await self.ws.recv())
        assert "error" in answer, answer
        return dict(answer)


def _is_last(message: dict[str, Any]) -> bool:
    return bool(message.get("done")) or "error" in message


@pytest.fixture
async def open_socket() -> AsyncIterator[Callable[..., Any]]:
    async with contextlib.AsyncExitStack() as stack:
        async def make(http_url: str, **kwargs: Any) -> Socket:
            return Socket(await stack.enter_async_context(connect(ws_url(http_url), **kwargs)))

        yield make


@pytest.fixture
def one_sim(sim_factory: Callable[..., Any], proxy_factory: Callable[..., Any]) -> Callable[..., Any]:
    """`sim, url = await one_sim(server={...}, **sim_kwargs)`: one simulator (id `sim`) behind the proxy."""

    async def make(server: dict[str, Any] | None = None, **sim_kwargs: Any) -> tuple[SimServer, str]:
        sim = await sim_factory(**sim_kwargs)
        url = await proxy_factory({"backends": [{"id": "sim", "endpoint": sim.url}], "server": server or {}})
        return sim, url

    return make


def tokens(answer: list[dict[str, Any]]) -> list[str]:
    return [m["token"] for m in answer if "token" in m]


async def test_tokens_in_order_then_a_final_message(one_sim: Any, open_socket: Any) -> None:
    sim, url = await one_sim(time_scale=0.01)
    prompt = "Tell me about context windows"
    async with aiohttp.ClientSession() as session, session.post(
            f"{sim.url}/api/generate", json={"model": "llama3.2", "prompt": prompt, "stream": False}) as r:
        expected = (await r.json())["response"]
    sock = await open_socket(url)

    answer = await sock.ask(request_id="r1", model="llama3.2", prompt=prompt)

    assert all(m["request_id"] == "r1" for m in answer)
    assert "".join(tokens(answer)) == expected
    assert len(tokens(answer)) > 2
    assert "ttft_ms" in answer[0] and answer[0]["ttft_ms"] > 0
    assert not any("ttft_ms" in m for m in answer[1:])
    final = answer[-1]
    sent = (await sim_stats(sim))["last_body"]["/api/generate"]
    assert final == {"request_id": "r1", "done": True, "backend": "sim", "routing_reason": final["routing_reason"],
                     "prompt_eval_count": final["prompt_eval_count"], "eval_count": len(tokens(answer)),
                     "total_ms": final["total_ms"], "num_ctx": sent["options"]["num_ctx"], "done_reason": "stop"}
    assert final["routing_reason"] and final["prompt_eval_count"] > 0
    assert final["total_ms"] >= answer[0]["ttft_ms"]
    # "auto" is the default: the window was sized, and the sized value is what the simulator received.
    assert sent["options"]["num_ctx"] == 2048


async def test_chat_with_a_fixed_context_and_options(one_sim: Any, open_socket: Any) -> None:
    sim, url = await one_sim()
    sock = await open_socket(url)

    answer = await sock.ask(request_id="c", model="llama3.2", messages=[{"role": "user", "content": "hi"}],
                            context=8192, options={"temperature": 0.2}, stream=False)

    sent = (await sim_stats(sim))["last_body"]["/api/chat"]
    assert sent == {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": False,
                    "options": {"temperature": 0.2, "num_ctx": 8192}}
    assert len(tokens(answer)) == 1 and "ttft_ms" in answer[0]  # a whole reply is one token message
    assert answer[-1]["done"] and answer[-1]["num_ctx"] == 8192


async def test_two_requests_multiplexed_on_one_socket(one_sim: Any, open_socket: Any) -> None:
    # Two parallel slots and a pace slow enough that the two streams overlap.
    sim, url = await one_sim(time_scale=0.2, num_parallel=2, reply_tokens=(12, 12))
    sock = await open_socket(url)
    await sock.send({"request_id": "a", "model": "llama3.2", "prompt": "first question"})
    await sock.send({"request_id": "b", "model": "llama3.2", "prompt": "second question"})

    answers = [await sock.answer("a"), await sock.answer("b")]

    for answer in answers:
        assert len(tokens(answer)) == 12 and answer[-1]["eval_count"] == 12
    def first(request_id: str) -> int:
        return next(i for i, m in enumerate(sock.arrived) if m["request_id"] == request_id)

    def done(request_id: str) -> int:
        return next(i for i, m in enumerate(sock.arrived) if m["request_id"] == request_id and m.get("done"))

    # Interleaved: each request had sent tokens before the other one finished.
    assert first("b") < done("a") and first("a") < done("b")
    assert (await sim_stats(sim))["peak_in_flight"]["llama3.2:latest"] == 2


async def test_a_missing_request_id_is_made_up_and_returned(one_sim: Any, open_socket: Any) -> None:
    _, url = await one_sim()
    sock = await open_socket(url)
    await sock.send({"model": "llama3.2", "prompt": "hi"})
    async with asyncio.timeout(TIMEOUT_S):
        first = json.loads(await sock.ws.recv())
    request_id = first["request_id"]
    assert len(request_id) == 36
    rest = await sock.answer(request_id)
    assert rest[-1]["done"] and rest[-1]["request_id"] == request_id


async def test_cancel_stops_the_upstream_request(one_sim: Any, open_socket: Any) -> None:
    # The nvidia profile streams about 90 tokens/s: a 2000-token reply would run for 20 s.
    sim, url = await one_sim(profile="nvidia", time_scale=1.0, reply_tokens=(2000, 2000))
    sock = await open_socket(url)
    await sock.send({"request_id": "long", "model": "llama3.2", "prompt": "a long story"})
    async with asyncio.timeout(TIMEOUT_S):
        first = json.loads(await sock.ws.recv())
    assert first["request_id"] == "long" and "token" in first

    await sock.send({"type": "cancel", "request_id": "long"})
    answer = await sock.answer("long")

    assert answer[-1]["done"] is True and answer[-1]["cancelled"] is True
    assert len(tokens(answer)) < 200

    async def upstream_cancelled() -> bool:
        return bool((await sim_stats(sim))["cancelled"] == 1)

    await eventually(upstream_cancelled, "the simulator to see its client go away")
    # The id is free again, and the socket serves the next request.
    await sock.send({"type": "cancel", "request_id": "long"})
    assert (await sock.answer("long"))[-1]["status"] == 404


async def test_closing_the_socket_cancels_its_requests(one_sim: Any) -> None:
    sim, url = await one_sim(profile="nvidia", time_scale=1.0, reply_tokens=(2000, 2000))
    async with connect(ws_url(url)) as ws:
        for request_id in ("x", "y"):
            await ws.send(json.dumps({"request_id": request_id, "model": "llama3.2", "prompt": request_id}))
        await ws.recv()

    async def both_cancelled() -> bool:
        return bool((await sim_stats(sim))["cancelled"] == 2)

    await eventually(both_cancelled, "both upstream requests to be cancelled")


@pytest.mark.parametrize(("message", "request_id", "status", "says"), [
    pytest.param("{not json", None, 400, "invalid JSON", id="bad-json"),
    pytest.param('["a"]', None, 400, "JSON object", id="not-an-object"),
    pytest.param({"request_id": "m", "prompt": "hi"}, "m", 400, "model", id="missing-model"),
    pytest.param({"request_id": "p", "model": "llama3.2"}, "p", 400, "prompt", id="missing-prompt"),
    pytest.param({"model": "llama3.2", "prompt": "hi", "messages": []}, None, 400, "both", id="prompt-and-messages"),
    pytest.param({"request_id": "u", "model": "llama3.2", "prompt": "hi", "temperature": 1}, "u", 400,
                 "unknown field temperature", id="unknown-field"),
    pytest.param({"request_id": "v", "model": "llama3.2", "prompt": "hi", "priority": "urgent"}, "v", 400,
                 "priority: unknown priority 'urgent'", id="unknown-priority"),
    pytest.param({"request_id": "w", "model": "llama3.2", "prompt": "hi", "context": 1000}, "w", 400,
                 "context: expected \"auto\" or one of 2048", id="unknown-context-size"),
    pytest.param({"request_id": "s", "model": "llama3.2", "prompt": "hi", "stream": "yes"}, "s", 400,
                 "stream", id="stream-not-a-boolean"),
    pytest.param({"request_id": "o", "model": "llama3.2", "prompt": "hi", "options": [1]}, "o", 400,
                 "options", id="options-not-an-object"),
    pytest.param({"request_id": "l", "model": "llama3.2", "prompt": "hi", "max_latency_ms": -5}, "l", 400,
                 "max_latency_ms: expected a positive number", id="negative-latency-budget"),
    pytest.param({"type": "stop", "request_id": "t"}, "t", 400, "type", id="unknown-type"),
    pytest.param({"type": "cancel", "request_id": "nothing"}, "nothing", 404, "no request", id="cancel-unknown"),
    pytest.param(b"\x00binary", None, 400, "text frames", id="binary-frame"),
])
async def test_refused_messages_keep_the_socket_usable(one_sim: Any, open_socket: Any, message: Any,
                                                       request_id: str | None, status: int, says: str) -> None:
    _, url = await one_sim()
    sock = await open_socket(url)

    error = await sock.error(message)

    assert error.get("request_id") == request_id
    assert error["status"] == status and says in error["error"], error
    answer = await sock.ask(request_id="after", model="llama3.2", prompt="still there?")
    assert answer[-1]["done"] is True


async def test_a_request_id_already_in_flight_is_refused(one_sim: Any, open_socket: Any) -> None:
    _, url = await one_sim(profile="nvidia", time_scale=1.0, reply_tokens=(30, 30))
    sock = await open_socket(url)
    await sock.send({"request_id": "dup", "model": "llama3.2", "prompt": "one"})
    await sock.send({"request_id": "dup", "model": "llama3.2", "prompt": "two"})

    answer = await sock.answer("dup")  # up to the refusal, which arrives while the first one streams
    refusal = answer[-1]
    assert refusal["status"] == 409 and "already in flight" in refusal["error"]
    rest = await sock.answer("dup")
    assert rest[-1]["done"] is True and len(tokens(answer + rest)) == 30


async def test_too_many_requests_on_one_socket_are_refused(one_sim: Any, open_socket: Any) -> None:
    _, url = await one_sim(profile="nvidia", time_scale=1.0, reply_tokens=(2000, 2000))
    sock = await open_socket(url)
    for i in range(MAX_REQUESTS_PER_SOCKET):
        await sock.send({"request_id": f"r{i}", "model": "llama3.2", "prompt": str(i)})
    refusal = await sock.ask(request_id="one-more", model="llama3.2", prompt="x")
    assert refusal[-1]["status"] == 429 and "already in flight" in refusal[-1]["error"]


async def test_an_unknown_model_is_named(one_sim: Any, open_socket: Any) -> None:
    _, url = await one_sim()
    sock = await open_socket(url)
    answer = await sock.ask(request_id="nm", model="no-such-model", prompt="hi")
    assert answer == [{"request_id": "nm", "status": 404, "error": answer[0]["error"]}]
    assert "no-such-model" in answer[0]["error"]


async def test_a_stream_that_breaks_ends_with_an_error_for_its_request(one_sim: Any, open_socket: Any) -> None:
    sim, url = await one_sim(reply_tokens=(20, 20))
    await sim_fault(sim, mode="drop_mid_stream", after_chunks=3, count=1, paths=["/api/generate"])
    sock = await open_socket(url)

    answer = await sock.ask(request_id="broken", model="llama3.2", prompt="hi")

    assert len(tokens(answer)) == 3
    assert answer[-1]["request_id"] == "broken" and answer[-1]["status"] == 502 and answer[-1]["error"]
    assert (await sock.ask(request_id="next", model="llama3.2", prompt="hi"))[-1]["done"] is True


async def test_routing_hints_mean_what_the_headers_mean(fleet_factory: Any, open_socket: Any) -> None:
    fleet = await fleet_factory()
    sock = await open_socket(fleet.url)

    targeted = await sock.ask(request_id="t", model="llama3.2", prompt="hi", target_backend="cpu")
    assert targeted[-1]["backend"] == "cpu"
    assert (await fleet.served())["cpu"] == 1

    frugal = await sock.ask(request_id="w", model="llama3.2", prompt="hi", max_power_watts=5)
    assert frugal[-1]["backend"] == "npu"  # the only backend under 5 W

    refused = await sock.ask(request_id="none", model="llama3.2", prompt="hi", max_power_watts=1)
    assert refused[-1]["status"] == 503 and set(refused[-1]["excluded"]) == {"npu", "igpu", "nvidia", "cpu"}

    unknown = await sock.ask(request_id="u", model="llama3.2", prompt="hi", target_backend="tpu")
    assert unknown[-1]["status"] == 400 and "tpu" in unknown[-1]["error"]


async def test_api_keys_guard_the_upgrade(one_sim: Any, open_socket: Any) -> None:
    _, url = await one_sim(server={"api_keys": ["s3cret"]})
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(ws_url(url)):
            pass
    assert refused.value.response.status_code == 401
    assert b"API key" in refused.value.response.body

    for headers in ({"Authorization": "Bearer s3cret"}, {"X-API-Key": "s3cret"}):
        sock = await open_socket(url, additional_headers=headers)
        assert (await sock.ask(request_id="k", model="llama3.2", prompt="hi"))[-1]["done"] is True


async def test_a_foreign_origin_is_refused_before_the_upgrade(one_sim: Any, open_socket: Any) -> None:
    _, url = await one_sim()
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(ws_url(url), origin=websockets.Origin("https://evil.example")):
            pass
    assert refused.value.response.status_code == 403
    sock = await open_socket(url, origin=websockets.Origin("http://localhost:3000"))
    assert (await sock.ask(request_id="o", model="llama3.2", prompt="hi"))[-1]["done"] is True


async def test_a_plain_get_is_told_to_upgrade(one_sim: Any) -> None:
    _, url = await one_sim()
    async with aiohttp.ClientSession() as session, session.get(url + PATH) as r:
        assert r.status == 426 and r.headers["Upgrade"] == "websocket"
        assert "WebSocket" in (await r.json())["error"]["message"]


async def test_ping_is_answered(one_sim: Any, open_socket: Any) -> None:
    _, url = await one_sim()
    sock = await open_socket(url)
    async with asyncio.timeout(5):
        await (await sock.ws.ping())


async def test_a_reader_that_stops_reading_is_held_to_a_bounded_buffer(sim_factory: Callable[..., Any]) -> None:
    """Backpressure: a client that stops reading a 20,000-token stream (about 2 MB of NDJSON from the
    backend) stalls its request in the proxy, with little written to its socket and no growth in the
    proxy's memory; reading again delivers every token in order."""
    total = 20_000
    sim = await sim_factory(reply_tokens=(total, total))
    runner = await start(validate({"backends": [{"id": "sim", "endpoint": sim.url}]}), host="127.0.0.1", port=0)
    tracemalloc.start(12)
    try:
        front = runner.app[WEBSOCKET_KEY]
        # A small receive window, so the kernel on the client's side does not hide the stall.
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", bound_port(runner)))
        async with connect(f"ws://127.0.0.1:{bound_port(runner)}{PATH}", sock=raw, max_queue=4) as ws:
            before = tracemalloc.take_snapshot()
            await ws.send(json.dumps({"request_id": "big", "model": "llama3.2", "prompt": "everything",
                                      "context": 4096}))
            peak_buffered = 0
            for _ in range(20):  # two seconds without reading: unhindered, the stream takes well under one
                await asyncio.sleep(0.1)
                peak_buffered = max(peak_buffered, front.buffered_bytes())
            grown = _proxy_memory(tracemalloc.take_snapshot()) - _proxy_memory(before)
            tracemalloc.stop()  # it slows every allocation, and the rest of the stream is long
            assert front.in_flight == 1, "the request should be waiting for its reader"
            assert peak_buffered <= 128 * 1024, f"{peak_buffered} bytes queued in the proxy for a stalled socket"
            assert grown <= 512 * 1024, f"the proxy's memory grew by {grown} bytes while the reader stalled"

            received = 0
            async with asyncio.timeout(60):
                while not (message := json.loads(await ws.recv())).get("done"):
                    assert message["request_id"] == "big"
                    received += 1
            assert received == total == message["eval_count"]
    finally:
        tracemalloc.stop()
        await runner.cleanup()


def _proxy_memory(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes allocated outside the simulator, which runs in the same process (its planned reply alone
    is a few megabytes)."""
    ours = snapshot.filter_traces([tracemalloc.Filter(False, "*/ollama_proxy/sim/*", all_frames=True)])
    return sum(stat.size for stat in ours.statistics("filename"))


async def test_shutdown_lets_requests_finish_then_closes_with_going_away(sim_factory: Callable[..., Any]) -> None:
    sim = await sim_factory(profile="nvidia", time_scale=1.0, reply_tokens=(30, 30))
    runner = await start(validate({"backends": [{"id": "sim", "endpoint": sim.url}]}), host="127.0.0.1", port=0)
    draining: asyncio.Future[None] | None = None
    try:
        async with connect(f"ws://127.0.0.1:{bound_port(runner)}{PATH}") as ws:
            sock = Socket(ws)
            await sock.send({"request_id": "last", "model": "llama3.2", "prompt": "finish me"})
            async with asyncio.timeout(TIMEOUT_S):
                first = json.loads(await ws.recv())
            assert "token" in first
            draining = asyncio.ensure_future(drain(runner, grace_s=10))
            await asyncio.sleep(0.05)
            late = await sock.ask(request_id="late", model="llama3.2", prompt="too late")
            assert late[-1]["status"] == 503 and "shutting down" in late[-1]["error"]

            rest = await sock.answer("last")
            assert rest[-1]["done"] is True and len(tokens([first, *rest])) == 30
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async with asyncio.timeout(TIMEOUT_S):
                    await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    finally:
        await (draining if draining is not None else runner.cleanup())  # drain ends with the cleanup
