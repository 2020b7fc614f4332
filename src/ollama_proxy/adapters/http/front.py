"""The HTTP front of the pipeline: an aiohttp request in, a `Call` to the pipeline, its `Reply` back out
as an HTTP response.

Here and only here are URLs turned into operations (`/api/chat` is CHAT in the Ollama dialect,
`/v1/chat/completions` CHAT in the OpenAI one, `/proxy-context/{auto|size}/` the sizing asked for),
the routing headers read, decisions rendered as `X-*` headers, streams framed as NDJSON or SSE, and
errors given their HTTP status and the route's JSON shape. The body is parsed only when a decision
needs it (a JSON operation), and relayed bytes are written as they come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from functools import partial

import orjson
from aiohttp import web
from multidict import CIMultiDictProxy

from ollama_proxy.adapters.http.access import AccessLog
from ollama_proxy.adapters.http.calls import (
    ALLOW,
    ROUTE_HEADERS_LOWER,
    STREAM_CONTENT_TYPES,
    CallRules,
    Exchange,
    answer_headers,
    new_request_id,
    operation_of,
    refusal,
)
from ollama_proxy.adapters.http.metrics import Metrics
from ollama_proxy.adapters.http.replies import error_response, stream_error_line
from ollama_proxy.config.schema import Config
from ollama_proxy.core.ollama_api import ContextRoute
from ollama_proxy.core.openai.sse import DONE_EVENT, encode_event
from ollama_proxy.core.streams import EndOfStream, StreamFailure
from ollama_proxy.errors import BadRequest, OllamaProxyError, PayloadTooLarge
from ollama_proxy.service.pipeline import Pipeline
from ollama_proxy.service.reply import Call, CallRecord, Framing, Reply

log = logging.getLogger("ollama_proxy.access")


class HttpFront:
    def __init__(self, config: Config, pipeline: Pipeline, metrics: Metrics) -> None:
        self.metrics = metrics
        self.access = AccessLog(config, metrics)
        self.in_flight = 0  # requests being handled now (by every HTTP front): what a shutdown drains
        self.follow(config, pipeline)

    def follow(self, config: Config, pipeline: Pipeline) -> None:
        """Serve new requests with these (a configuration reload); requests under way keep theirs."""
        self.pipeline = pipeline
        self.rules = CallRules(config)
        self.access.follow(config)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        given_id = request.headers.get("X-Request-ID")
        exchange = _Exchange(given_id or new_request_id(), request.method, self.rules.initial_route(request.path))
        self.in_flight += 1
        try:
            call = await self._call(request, exchange, given_id)
            if isinstance(call, web.StreamResponse):
                response = call
            else:
                exchange.record = CallRecord(started=exchange.started)
                response = await self.pipeline.run(call, partial(self._respond, request, exchange), exchange.record)
        except OllamaProxyError as exc:
            response = await self._failed(request, exchange, exc)
        except (asyncio.CancelledError, ConnectionResetError) as exc:
            exchange.status = 499
            self.access.finished(exchange, time.perf_counter() - exchange.started, "client went away")
            if isinstance(exc, ConnectionResetError):
                # A write to a client that hung up: a cancellation, not a server error to report.
                raise asyncio.CancelledError from exc
            raise
        except Exception as exc:
            # The one place a bug surfaces: answered in the route's shape, logged once with its
            # traceback and the request id, counted; the proxy goes on serving.
            log.exception("%s unexpected error while handling %s %s", exchange.request_id, request.method,
                          exchange.path)
            self.metrics.count_failure("internal_error")
            response = await self._failed(request, exchange, OllamaProxyError(
                f"internal error in the proxy ({type(exc).__name__}); request id {exchange.request_id}"))
        finally:
            self.in_flight -= 1
        exchange.status = response.status
        self.access.finished(exchange, time.perf_counter() - exchange.started)
        return response

    async def _call(self, request: web.Request, exchange: _Exchange, given_id: str | None
                    ) -> Call | web.StreamResponse:
        rules = self.rules
        path = rules.route(exchange, request.path)
        if not rules.forwarded(request.method):
            # Preflights are answered by the CORS guard; nothing else about OPTIONS concerns a backend.
            return web.Response(status=204, headers={"X-Request-ID": exchange.request_id, "Allow": ALLOW})
        operation, dialect, model_id = operation_of(path)
        body = raw = None
        if rules.parses_body(request.method, operation, dialect):
            rules.check_length(request.content_length)
            body, raw = rules.parse_json(await _read_body(request, rules.max_body_bytes, rules.body_timeout_s),
                                         request.method, operation, dialect)
        streamed = raw is None and request.body_exists
        return rules.call(exchange, request.method, operation, dialect, model_id, body=body, raw=raw,
                          upload=request.content.iter_any() if streamed else None,
                          query=request.query_string or None, headers=request.headers.items(),
                          routing=_routing_headers(request.headers), given_id=given_id)

    async def _respond(self, request: web.Request, exchange: _Exchange, reply: Reply) -> web.StreamResponse:
        headers = answer_headers(reply.headers, exchange.request_id, reply.record)
        if reply.stream is None:
            body = reply.body
            if isinstance(body, bytes):
                return web.Response(status=reply.status, body=body, headers=headers)
            return web.Response(status=reply.status, body=orjson.dumps(body), headers=headers,
                                content_type="application/json")
        if not reply.headers:
            headers.extend(STREAM_CONTENT_TYPES.get(reply.framing, ()))
        response = web.StreamResponse(status=reply.status, headers=headers)
        await response.prepare(request)
        exchange.started_stream = response
        sse = reply.framing is Framing.SSE
        async for piece in reply.stream:
            if type(piece) is bytes:
                await response.write(piece)
            elif isinstance(piece, dict):
                await response.write(encode_event(piece) if sse else orjson.dumps(piece) + b"\n")
            elif isinstance(piece, EndOfStream):
                await response.write(DONE_EVENT)
            elif isinstance(piece, StreamFailure):
                await response.write(stream_error_line(piece.reason, sse, open_line=piece.open_line))
        await response.write_eof()
        return response

    async def _failed(self, request: web.Request, exchange: _Exchange, exc: OllamaProxyError) -> web.StreamResponse:
        """The error answer: a JSON error in the route's shape, or, once a stream has started, its last line."""
        headers, extra = refusal(exchange, exc)
        started = exchange.started_stream
        if started is not None:
            with contextlib.suppress(ConnectionError):
                await started.write(stream_error_line(str(exc), "event-stream" in started.content_type,
                                                      path=exchange.path))
                await started.write_eof()
            return started
        return error_response(exchange.path, str(exc), getattr(exc, "status", 500), headers=headers, **extra)


class _Exchange(Exchange):
    __slots__ = ("started_stream",)

    def __init__(self, request_id: str, method: str, route: ContextRoute) -> None:
        super().__init__(request_id, method, route)
        self.started_stream: web.StreamResponse | None = None


def _routing_headers(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    """Only the headers routing reads: handing over the whole header set would have every header
    copied and lowercased on each request. The last of repeated headers wins, as it would there."""
    return {name: headers.getall(name)[-1] for name in ROUTE_HEADERS_LOWER.values() if name in headers}


async def _read_body(request: web.Request, limit: int, idle_timeout_s: float) -> bytes:
    """The request body, refused past `limit` bytes or after `idle_timeout_s` of silence from the client."""
    content = request.content
    parts: list[bytes] = []
    size = 0
    while True:
        if content.is_eof():
            # All of it is here (a small body usually arrives with the headers): nothing to wait for or time.
            chunk = content.read_nowait()
        else:
            try:
                async with asyncio.timeout(idle_timeout_s):
                    chunk = await content.readany()
            except TimeoutError:
                raise BadRequest(f"the request body stopped arriving for {idle_timeout_s:g} s "
                                 "(server.header_timeout_s)", 408) from None
        if not chunk:
            return b"".join(parts)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(limit)
        parts.append(chunk)
