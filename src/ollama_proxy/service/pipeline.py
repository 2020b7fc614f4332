"""The one request pipeline every front goes through: count -> route -> admit -> send -> fail over ->
relay -> learn.

`Pipeline.run(call, respond)` hands the call's `Reply` to the front's `respond` and returns what that
returns. While `respond` drains the reply, the pipeline keeps the call's admission slot and upstream
connection; its return releases both (a front whose client went away is cancelled inside `respond`,
which tells the backend's breaker nothing and cancels the upstream request). A call rather than an
async context manager: a generator-based one costs each request an async generator, its loop hooks
and contextlib's wrapper, about 2.5 µs. The rule "fail over only before the first byte" holds by
construction: everything that can still fail over — connecting, the response headers, an error body,
a whole reply, the first piece of a stream — happens before `respond` is called, and after that a
failure can only end the stream (`relays`).

Hot path: the body is re-encoded only when something in it changed (sizing, translation), and a
relayed stream's bytes are not parsed, except the last line, for learning.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from typing import Any, TypeVar

import orjson

from ollama_proxy.config.schema import Config
from ollama_proxy.core.ollama_api import SizeMode
from ollama_proxy.core.openai.reverse_requests import REVERSE_TRANSLATORS, is_load_only
from ollama_proxy.core.openai.reverse_responses import load_only_reply
from ollama_proxy.core.operations import Dialect, Operation
from ollama_proxy.core.routing.breaker import Outcome, classify_status
from ollama_proxy.core.routing.latency import operation_kind
from ollama_proxy.core.routing.select import fail_over
from ollama_proxy.core.translation import NativeCall
from ollama_proxy.core.translators import COUNTED_ONLY, TRANSLATORS
from ollama_proxy.errors import BadRequest, NoBackendAvailable, OllamaProxyError, UpstreamError, UpstreamTimeout
from ollama_proxy.service import relays
from ollama_proxy.service.context import ContextService, Sizing
from ollama_proxy.service.decisions import DecisionLog
from ollama_proxy.service.listings import Listings
from ollama_proxy.service.pool import Backend, BackendPool
from ollama_proxy.service.reply import Call, CallRecord, Framing, Reply
from ollama_proxy.service.router import Router
from ollama_proxy.service.transport import Body

log = logging.getLogger("ollama_proxy.pipeline")

Relay = Callable[..., Awaitable[Reply]]
Answered = TypeVar("Answered")
# Ollama reports time spent getting a runner: more than a blink means a load or reload happened,
# so /api/ps is worth reading again (on a warm model it is not).
_LOAD_NOTICEABLE_NS = 50_000_000


class Pipeline:
    def __init__(self, config: Config, pool: BackendPool, router: Router, context: ContextService,
                 listings: Listings, *, decisions: DecisionLog | None = None,
                 on_failure: Callable[[str], None] = lambda kind: None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.pool = pool
        self.decisions = decisions or DecisionLog(clock=clock)
        self.router = router
        self.context = context
        self.listings = listings
        self._on_failure = on_failure
        self._clock = clock
        self._max_failover = config.router.max_failover
        self._management_default = config.router.default_backend
        # A lone OpenAI-type backend has no /api/tags of its own: the merged view translates it.
        self._merging = sum(b.enabled for b in config.backends) > 1 or any(
            b.enabled and b.type == "openai" for b in config.backends)

    async def run(self, call: Call, respond: Callable[[Reply], Awaitable[Answered]],
                  record: CallRecord | None = None) -> Answered:
        """Hand the call's reply to `respond`; returns what it returned. `record` (made here when not
        given) fills in as the pipeline decides, so a front can explain a refusal too: the routing and
        sizing decided before it failed. The decision log notes how it ended: the reply's status, else
        the refusal's. What `respond` raises goes through the pipeline as a failure of the reply."""
        record = record if record is not None else CallRecord(started=self._clock())
        status, error = 499, "the client went away"
        try:
            op = call.operation
            if op.merged and call.method == "GET" and call.hints.target is None and (
                    op is Operation.MODELS or self._merging):
                reply = Reply(200, record, Framing.JSON, body=await self._listing(call))
                status, error = 200, ""
                return await respond(reply)
            if op in COUNTED_ONLY:
                reply = Reply(200, record, Framing.JSON, body=await self._count_only(call))
                status, error = 200, ""
                return await respond(reply)
            translate = TRANSLATORS.get((call.dialect, op))
            native = translate(call.body) if translate is not None and call.body is not None else None
            sizing = await self._count(call, native)
            asked = native.body if native else call.body or {}
            required = self.context.required(sizing, op, asked) if sizing else None
            route = call.hints.asked(_routing_model(call), required, operation_kind(op),
                                     sizing.reply if sizing else self.context.reply_budget(op, asked))
            if route.target is None and op.management and self._management_default:
                route = replace(route, target=self._management_default)
            decision = self.router.decide(route)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s routed to %s (%s); alternatives %s; excluded %s", call.request_id,
                          decision.backend_id, decision.reason, ",".join(decision.alternatives) or "-",
                          dict(decision.excluded) or "-")
            # A streamed request body (blob upload) can be sent once only: no failover for it.
            attempts = 1 if call.upload is not None else 1 + self._max_failover
            last_error: OllamaProxyError | None = None
            for attempt in range(attempts):
                backend = self.pool.backends[decision.backend_id]
                is_last = attempt == attempts - 1 or not decision.alternatives
                record.routing, record.backend_id = decision, backend.id
                why = "unreachable"
                # The attempt's admission slot and upstream reply stay held while the front drains the
                # reply (`respond` is called inside them); `delivered` tells a failure of this attempt,
                # which may fail over, from one the front raised, which may not.
                delivered = False
                try:
                    async with backend.gate.admit(route.priority) as record.queued_ms:
                        prepared = await self._prepare(call, record, backend, native, sizing)
                        if isinstance(prepared, Reply):
                            delivered = True
                            status, error = prepared.status, ""
                            return await respond(prepared)
                        path, body, relay = prepared
                        self.pool.dispatching(backend)
                        async with backend.client.open(call.method, path, query=call.query,
                                                       headers=self._headers(call, backend), body=body) as upstream:
                            outcome = Outcome.SUCCESS
                            if upstream.status >= 500:
                                error_text = (await upstream.read_error_body()).decode(errors="replace")
                                outcome = classify_status(upstream.status, error_text)
                            self.pool.record(backend, outcome)
                            # A request the backend refused as invalid would fail the same way everywhere.
                            if outcome is Outcome.SUCCESS or outcome is Outcome.REQUEST_FAULT or is_last:
                                record.first_byte = self._clock()
                                reply = await relay(upstream, backend_id=backend.id, record=record,
                                                    learner=_Learning(self, call, record, backend, sizing))
                                delivered = True
                                try:
                                    status, error = reply.status, ""
                                    answered = await respond(reply)
                                finally:
                                    if reply.stream is not None:
                                        await reply.stream.aclose()
                                if op.management and reply.status < 400:
                                    self.pool.refresh_models_soon(backend)
                                return answered
                            why = f"HTTP {upstream.status}"
                            log.warning("%s backend %s answered %d (%s); failing over", call.request_id,
                                        backend.id, upstream.status, error_text[:200])
                except UpstreamError as exc:
                    if delivered:
                        raise
                    last_error = exc
                    self.pool.record(backend, Outcome.TIMEOUT if isinstance(exc, UpstreamTimeout)
                                     else Outcome.CONNECT_ERROR)
                    self.pool.mark_unreachable(backend, str(exc))
                    why = "timed out" if isinstance(exc, UpstreamTimeout) else "unreachable"
                    log.warning("%s %s", call.request_id, exc)
                except NoBackendAvailable as exc:
                    # Queue full here: another backend may still have room.
                    if delivered or exc.status != 429 or is_last:
                        raise
                    last_error, why = exc, "queue full"
                except (asyncio.CancelledError, ConnectionResetError):
                    # The client went away, waiting or while its reply was drained: nothing about the backend.
                    self.pool.record(backend, Outcome.CLIENT_GONE)
                    raise
                if is_last:
                    break
                successor = self.pool.backends[decision.alternatives[0]]
                decision = fail_over(decision, backend.id, why, power_w=successor.config.characteristics.power_watts)
            raise last_error or NoBackendAvailable("no backend could take the request")
        except OllamaProxyError as exc:
            status, error = exc.status, str(exc)
            raise
        finally:
            self.decisions.note(call, record, status, error or None)

    async def _listing(self, call: Call) -> dict[str, Any]:
        if call.operation is Operation.MODELS:
            return await self.listings.openai_models(call.model_id)
        return await self.listings.merged(running=call.operation is Operation.PS)

    async def _count_only(self, call: Call) -> dict[str, Any]:
        """A token count the proxy answers itself, with the counter sizing uses (exact where it can)."""
        to_native, reply = COUNTED_ONLY[call.operation]
        native = to_native(call.body)
        model = str(native.get("model") or "")
        sizing = await self.context.count(model, native, self.pool.holder_of(model))
        return reply(sizing.count.tokens)

    async def _count(self, call: Call, native: NativeCall | None) -> Sizing | None:
        if call.size_mode is SizeMode.PASSTHROUGH or not call.model or call.body is None:
            return None
        if native is None and not call.operation.runs_model:
            return None
        counted = native.body if native is not None else call.body
        return await self.context.count(call.model, counted, self.pool.holder_of(call.model))

    async def _prepare(self, call: Call, record: CallRecord, backend: Backend, native: NativeCall | None,
                       sizing: Sizing | None) -> tuple[str, Body, Relay] | Reply:
        """What to send to this backend (path, body) and how to relay its answer back."""
        op = call.operation
        if not backend.is_ollama and call.dialect is Dialect.OLLAMA:
            if op not in REVERSE_TRANSLATORS or call.body is None:
                raise BadRequest(f"backend {backend.id!r} is an OpenAI-type server: it has no {call.path}", 501)
            request = REVERSE_TRANSLATORS[op](call.body)
            if is_load_only(request.context.kind, call.body):
                return Reply(200, record, Framing.JSON, body=load_only_reply(request.context, time.time()))
            return request.path, orjson.dumps(request.body), partial(relays.native_from_openai,
                                                                    context=request.context)
        if not backend.is_ollama and native is not None and not _spoken_by_openai_servers(call):
            # Translated to native already: from there, to the chat completions every such server has.
            request = REVERSE_TRANSLATORS[Operation.CHAT](native.body)
            return request.path, orjson.dumps(request.body), partial(
                relays.translated_via_openai, context=request.context, translation=native.translation)
        path, body = call.path, call.body
        relay: Relay = partial(relays.relay, operation=op, dialect=call.dialect)
        if backend.is_ollama and native is not None:
            path, body = native.path, dict(native.body)
            relay = partial(relays.translated, translation=native.translation)
        if sizing is not None and backend.is_ollama and body is not None:
            body = dict(body)
            record.sizing = await self.context.size(sizing, backend, body, call.fixed_size)
        if call.upload is not None:
            return path, call.upload, relay
        if body is call.body and call.raw_body is not None:
            return path, call.raw_body, relay
        return path, None if body is None else orjson.dumps(body), relay

    @staticmethod
    def _headers(call: Call, backend: Backend) -> tuple[tuple[str, str], ...]:
        # One id in the client's, the proxy's and the backend's logs, unless an OpenAI-type server
        # would refuse it.
        if backend.is_ollama or call.request_id_is_uuid:
            return (*call.headers, ("X-Request-ID", call.request_id))
        return tuple(call.headers)

    def stream_failed(self, call: Call, record: CallRecord, backend: Backend, reason: str,
                      error: UpstreamError | None) -> None:
        """A stream under way broke: logged as a failure, counted, and held against the backend when the
        backend broke it."""
        record.failure = reason
        self._on_failure("stream_broken")
        if error is not None:
            self.pool.record(backend, Outcome.TIMEOUT if isinstance(error, UpstreamTimeout) else Outcome.CONNECT_ERROR)
        log.warning("%s stream broken: %s", call.request_id, reason)

    def finished(self, call: Call, record: CallRecord, backend: Backend, sizing: Sizing | None,
                 final: dict[str, Any] | None) -> None:
        """Learn from a finished inference: latency, calibration, truncation, residency."""
        if final is None or not call.model:
            return
        now = self._clock()
        # The admission wait is the router's to estimate from the queue, not part of the backend's speed;
        # the operation and the body tell real inference from load and unload calls.
        self.router.observe_latency(backend, call.model, ttft_ms=((record.first_byte or now) - record.started) * 1000
                                    - record.queued_ms, total_ms=(now - record.started) * 1000 - record.queued_ms,
                                    final=final, operation=call.operation, body=call.body)
        if sizing is not None and backend.is_ollama and self.context.observe(sizing, final, backend):
            record.truncated = f"prompt_eval_count={final.get('prompt_eval_count')} counted={sizing.count.tokens}"
        load_ns = final.get("load_duration")
        if backend.loaded_context(call.model) is None or (isinstance(load_ns, int) and load_ns > _LOAD_NOTICEABLE_NS):
            self.pool.refresh_loaded_soon(backend)


class _Learning:
    """One attempt's `relays.Learner`: what the relay reports goes to the pipeline with the call's facts."""

    __slots__ = ("_backend", "_call", "_pipeline", "_record", "_sizing")

    def __init__(self, pipeline: Pipeline, call: Call, record: CallRecord, backend: Backend,
                 sizing: Sizing | None) -> None:
        self._pipeline, self._call, self._record = pipeline, call, record
        self._backend, self._sizing = backend, sizing

    def final(self, final: dict[str, Any] | None) -> None:
        self._pipeline.finished(self._call, self._record, self._backend, self._sizing, final)

    def failed(self, reason: str, error: UpstreamError | None) -> None:
        self._pipeline.stream_failed(self._call, self._record, self._backend, reason, error)


def _spoken_by_openai_servers(call: Call) -> bool:
    """An OpenAI-compatible server takes this call as the client sent it (chat completions, completions,
    embeddings); the Responses and Anthropic APIs are not theirs to count on."""
    return call.dialect is Dialect.OPENAI and call.operation is not Operation.RESPONSES


def _routing_model(call: Call) -> str | None:
    """The model a call must find on its backend. A pull brings one that exists nowhere yet, and a
    create needs only its base (`from`) where it runs."""
    if call.operation is Operation.PULL:
        return None
    if call.operation is Operation.CREATE and call.body is not None:
        base = call.body.get("from")
        return base if isinstance(base, str) and base else None
    return call.model

