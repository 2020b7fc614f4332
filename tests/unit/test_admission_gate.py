"""The asyncio admission gate: ordering under load, bounds, cancellation while queued, no starvation."""

from __future__ import annotations

import asyncio

import pytest

from ollama_proxy.config.schema import QueueConfig
from ollama_proxy.core.admission import AdmissionQueue, Priority
from ollama_proxy.errors import NoBackendAvailable
from ollama_proxy.service.admission import AdmissionGate


def _gate(max_concurrent: int = 1, clock: list[float] | None = None, **queue: object) -> AdmissionGate:
    settings: dict[str, object] = {"max_length": 64, "max_wait_ms": 60_000, "ageing_ms": 10_000,
                                   "reserve_critical": False}
    settings.update(queue)
    q: AdmissionQueue[object] = AdmissionQueue(max_concurrent, **settings)  # type: ignore[arg-type]
    if clock is None:
        return AdmissionGate("gpu", q)
    return AdmissionGate("gpu", q, clock=lambda: clock[0])


class Crowd:
    """Requests that each hold their slot until told to finish, recording the order they started."""

    def __init__(self, gate: AdmissionGate) -> None:
        self.gate = gate
        self.started: list[str] = []
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._done: dict[str, asyncio.Event] = {}

    async def arrive(self, name: str, priority: Priority) -> None:
        self._done[name] = asyncio.Event()
        self.tasks[name] = asyncio.create_task(self._run(name, priority))
        await asyncio.sleep(0)  # let it reach the gate, so arrival order is the call order

    async def _run(self, name: str, priority: Priority) -> None:
        async with self.gate.admit(priority):
            self.started.append(name)
            await self._done[name].wait()

    async def finish(self, name: str) -> None:
        self._done[name].set()
        await self.tasks[name]
        await asyncio.sleep(0)  # let the woken one start


async def test_free_slot_admits_without_waiting() -> None:
    gate = _gate(max_concurrent=2)
    async with gate.admit() as first, gate.admit() as second:
        assert (first, second) == (0.0, 0.0)
        assert gate.queue.in_flight == 2
    assert gate.queue.in_flight == 0


async def test_critical_sent_after_a_burst_starts_first() -> None:
    gate = _gate()
    crowd = Crowd(gate)
    await crowd.arrive("running", Priority.NORMAL)
    for i in range(8):
        await crowd.arrive(f"batch{i}", Priority.BEST_EFFORT)
    await crowd.arrive("voice", Priority.CRITICAL)
    await crowd.arrive("chat", Priority.HIGH)
    assert gate.queue.depth_by_level() == (8, 0, 1, 1)
    for name in ["running", "voice", "chat", *(f"batch{i}" for i in range(7))]:
        await crowd.finish(name)
    assert crowd.started == ["running", "voice", "chat", *(f"batch{i}" for i in range(8))]


async def test_reserved_slot_lets_critical_skip_a_full_backend() -> None:
    gate = _gate(reserve_critical=True)
    crowd = Crowd(gate)
    await crowd.arrive("running", Priority.NORMAL)
    await crowd.arrive("waiting", Priority.HIGH)
    await crowd.arrive("voice", Priority.CRITICAL)
    assert crowd.started == ["running", "voice"]
    await crowd.finish("voice")
    await crowd.finish("running")
    assert crowd.started == ["running", "voice", "waiting"]


async def test_queue_full_raises_429_with_retry_after() -> None:
    gate = _gate(max_length=1)
    crowd = Crowd(gate)
    await crowd.arrive("running", Priority.NORMAL)
    await crowd.arrive("waiting", Priority.NORMAL)
    with pytest.raises(NoBackendAvailable, match="queue full") as info:
        async with gate.admit(Priority.CRITICAL):
            pytest.fail("admitted past the bound")
    assert info.value.status == 429
    assert info.value.retry_after_s is not None and info.value.retry_after_s >= 1
    assert info.value.reasons == {"gpu": "queue full (1 waiting, limit 1)"}
    assert gate.queue.queued == 1


async def test_waiting_too_long_raises_503_and_leaves_the_queue() -> None:
    gate = _gate(max_wait_ms=30)
    async with gate.admit():
        with pytest.raises(NoBackendAvailable, match="waited 30 ms") as info:
            async with asyncio.timeout(2):
                async with gate.admit():
                    pytest.fail("admitted while the slot was held")
        assert info.value.status == 503
        assert info.value.retry_after_s is not None and info.value.retry_after_s >= 1
        assert gate.queue.queued == 0


async def test_cancelled_waiter_leaves_at_once_and_is_never_admitted() -> None:
    gate = _gate()
    crowd = Crowd(gate)
    await crowd.arrive("running", Priority.NORMAL)
    await crowd.arrive("gone", Priority.CRITICAL)
    await crowd.arrive("next", Priority.NORMAL)
    crowd.tasks["gone"].cancel()
    await asyncio.sleep(0)
    assert gate.queue.depth_by_level() == (0, 1, 0, 0)
    await crowd.finish("running")
    assert crowd.started == ["running", "next"]
    assert crowd.tasks["gone"].cancelled()


async def test_waiter_cancelled_as_it_is_woken_passes_the_slot_on() -> None:
    gate = _gate()
    crowd = Crowd(gate)
    holder = gate.admit()
    await holder.__aenter__()
    await crowd.arrive("unlucky", Priority.NORMAL)
    await crowd.arrive("next", Priority.NORMAL)
    # Neither call below suspends: "unlucky" is woken and cancelled before it can run.
    await holder.__aexit__(None, None, None)
    assert (gate.queue.in_flight, gate.queue.queued) == (1, 1)  # "unlucky" holds the slot
    crowd.tasks["unlucky"].cancel()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert crowd.started == ["next"]
    assert crowd.tasks["unlucky"].cancelled()
    assert gate.queue.in_flight == 1
    await crowd.finish("next")
    assert gate.queue.in_flight == 0


async def test_an_error_in_the_body_still_frees_the_slot() -> None:
    gate = _gate()
    with pytest.raises(RuntimeError):
        async with gate.admit():
            raise RuntimeError("upstream blew up")
    async with gate.admit() as waited:
        assert waited == 0.0


async def test_best_effort_is_not_starved_by_a_steady_high_stream() -> None:
    clock = [0.0]
    gate = _gate(clock=clock, ageing_ms=1_000)
    crowd = Crowd(gate)
    await crowd.arrive("h0", Priority.HIGH)
    await crowd.arrive("batch", Priority.BEST_EFFORT)
    holder = "h0"
    for i in range(1, 50):
        clock[0] = i * 0.1
        await crowd.arrive(f"h{i}", Priority.HIGH)
        await crowd.finish(holder)
        holder = crowd.started[-1]
        if holder == "batch":
            break
    assert holder == "batch"
    assert clock[0] <= 2.5
    for task in crowd.tasks.values():
        task.cancel()
    await asyncio.gather(*crowd.tasks.values(), return_exceptions=True)
    assert (gate.queue.in_flight, gate.queue.queued) == (0, 0)


def test_from_config_uses_the_queue_settings() -> None:
    gate = AdmissionGate.from_config("npu", 3, QueueConfig(max_length=7, max_wait_ms=500, ageing_ms=250))
    q = gate.queue
    settings = (q.max_concurrent, q.max_length, q.max_wait_ms, q.ageing_ms, q.reserve_critical)
    assert settings == (3, 7, 500, 250, True)
