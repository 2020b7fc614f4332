"""What every HTTP front (aiohttp's and the fast one) decides the same way about a request: which
operation its path names, which sizing its `/proxy-context/` prefix asks for, which method is
allowed, whether its body is parsed, the `Call` handed to the pipeline, the decision headers of the
answer and the headers of a refusal. No HTTP library here: each front hands in what it parsed.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from multidict import CIMultiDict

from ollama_proxy.adapters.http.headers import forwardable_request_headers, forwardable_response_pairs
from ollama_proxy.config.schema import Config
from ollama_proxy.core.ollama_api import (
    CONTEXT_PREFIX,
    ContextRoute,
    SizeMode,
    is_api_path,
    model_of,
    normalized_path,
    sizes_itself,
    split_context_route,
)
from ollama_proxy.core.operations import Dialect, Operation
from ollama_proxy.core.request_ids import is_uuid
from ollama_proxy.core.routing.headers import ROUTE_HEADERS, decision_headers, parse_route_headers, refusal_headers
from ollama_proxy.errors import BadRequest, NoBackendAvailable, OllamaProxyError, PayloadTooLarge
from ollama_proxy.service.reply import Call, CallRecord, Framing

_NATIVE = {"/api/generate": Operation.GENERATE, "/api/chat": Operation.CHAT, "/api/embed": Operation.EMBED,
           "/api/embeddings": Operation.EMBEDDINGS, "/api/show": Operation.SHOW, "/api/pull": Operation.PULL,
           "/api/push": Operation.PUSH, "/api/create": Operation.CREATE, "/api/copy": Operation.COPY,
           "/api/delete": Operation.DELETE, "/api/tags": Operation.TAGS, "/api/ps": Operation.PS}
_OPENAI = {"/v1/chat/completions": Operation.CHAT, "/v1/completions": Operation.COMPLETION,
           "/v1/embeddings": Operation.EMBED, "/v1/models": Operation.MODELS, "/v1/responses": Operation.RESPONSES}
_ANTHROPIC = {"/v1/messages": Operation.CHAT, "/v1/messages/count_tokens": Operation.COUNT_TOKENS}
_MODELS_PREFIX = "/v1/models/"
# What the proxy sends on to a backend; OPTIONS is answered here, anything else is refused.
FORWARDED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"})
_BODY_METHODS = frozenset({"POST", "PUT", "DELETE", "PATCH"})
ALLOW = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS"
# The content type of a stream the proxy frames itself (a relayed stream keeps the backend's).
STREAM_CONTENT_TYPES: dict[Framing, tuple[tuple[str, str], ...]] = {
    Framing.SSE: (("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")),
    Framing.NDJSON: (("Content-Type", "application/x-ndjson"),)}
ROUTE_HEADERS_LOWER = {name.lower(): name for name in ROUTE_HEADERS}


def new_request_id() -> str:
    """A random (version 4) UUID, built by hand: `str(uuid.uuid4())` costs several times as much
    and this runs on every request. An id names a request, it guards nothing: drawn from a generator
    seeded once from the system, not from a system call (`os.urandom`) per request."""
    # UUID-shaped: llama-cpp-python's server refuses any other X-Request-ID with an empty 400.
    h = (_REQUEST_IDS.getrandbits(128) & _UUID_CLEARED | _UUID_VERSION_4).to_bytes(16, "big").hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_REQUEST_IDS = random.Random()
# The version nibble (bits 76-79) and the RFC 4122 variant's two bits (62-63).
_UUID_CLEARED = ~((0xF << 76) | (0x3 << 62))
_UUID_VERSION_4 = (0x4 << 76) | (0x2 << 62)


def operation_of(path: str) -> tuple[Operation, Dialect, str | None]:
    """The operation and dialect a (normalised) path names, and the model id of `/v1/models/{id}`."""
    if path.startswith("/v1/") or path == "/v1":
        if path.startswith(_MODELS_PREFIX):
            return Operation.MODELS, Dialect.OPENAI, path[len(_MODELS_PREFIX):]
        anthropic = _ANTHROPIC.get(path)
        if anthropic is not None:
            return anthropic, Dialect.ANTHROPIC, None
        return _OPENAI.get(path, Operation.OTHER), Dialect.OPENAI, None
    return _NATIVE.get(path, Operation.OTHER), Dialect.OLLAMA, None


class Exchange:
    """What a front keeps about one request for its answer and its log line."""

    __slots__ = ("failure", "method", "model", "record", "request_id", "requested", "route", "started", "status")

    def __init__(self, request_id: str, method: str, route: ContextRoute) -> None:
        self.request_id = request_id
        self.method = method
        self.route = route
        self.requested = route.path  # the path as the client wrote it, /proxy-context/... included
        self.started = time.perf_counter()
        self.model: str | None = None
        self.record: CallRecord | None = None
        self.failure: str | None = None
        self.status = 0

    @property
    def path(self) -> str:
        return self.route.path


class CallRules:
    """The per-configuration part of turning a request into a `Call`, shared by the HTTP fronts."""

    def __init__(self, config: Config) -> None:
        self.sizes = config.context.sizes
        self.default_route = SizeMode(config.context.default_route.value)
        self.max_body_bytes = config.server.max_body_bytes
        self.body_timeout_s = config.server.header_timeout_s
        # The client's own X-Request-ID is replaced by the one the proxy answers with (the same, when given).
        drop = {"x-request-id"} | ({"authorization", "x-api-key"} if config.server.api_keys else set())
        self.drop = frozenset(drop)

    def initial_route(self, raw_path: str) -> ContextRoute:
        """What an exchange's route is until `route` has looked at the path (what a refusal names)."""
        return ContextRoute(self.default_route, raw_path)

    def route(self, exchange: Exchange, raw_path: str) -> str:
        """The upstream path of a forwardable request (its sizing noted on `exchange`); BadRequest otherwise."""
        try:
            exchange.requested = normalized_path(raw_path)
            exchange.route = route = split_context_route(exchange.requested, self.sizes, self.default_route)
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc
        if not is_api_path(route.path):
            raise BadRequest(f"no such endpoint: {route.path} (the proxy forwards /, /api/... and /v1/...; its "
                             "own views are the status page /ui, /status, /health, /backends, /efficiency, "
                             "/thermal and /metrics)", 404)
        return route.path

    @staticmethod
    def forwarded(method: str) -> bool:
        """True for a method sent on, False for OPTIONS (answered by the front); BadRequest for the rest."""
        if method in FORWARDED_METHODS:
            return True
        if method == "OPTIONS":
            return False
        raise BadRequest(f"method {method} is not allowed (allowed: {ALLOW})", 405)

    @staticmethod
    def parses_body(method: str, operation: Operation, dialect: Dialect) -> bool:
        """Whether the body is read whole and parsed (a decision needs it) rather than streamed on."""
        return method in _BODY_METHODS and (operation.json_body or dialect is not Dialect.OLLAMA)

    def check_length(self, declared: int | None) -> None:
        """A declared length over the limit is refused before a byte of the body is read."""
        if declared is not None and declared > self.max_body_bytes:
            raise PayloadTooLarge(self.max_body_bytes)

    @staticmethod
    def parse_json(raw: bytes, method: str, operation: Operation, dialect: Dialect
                   ) -> tuple[dict[str, Any] | None, bytes | None]:
        if not raw.strip():
            if method != "POST" or operation is Operation.DELETE:
                return None, None
            raise BadRequest("missing request body")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"invalid JSON in request body: {exc}") from exc
        if not isinstance(body, dict):
            raise BadRequest(f"request body must be a JSON object, got {type(body).__name__}")
        options = body.get("options")
        if options is not None and not isinstance(options, dict) and dialect is Dialect.OLLAMA:
            raise BadRequest(f"options must be a JSON object, got {_json_type(options)}")
        return body, raw

    def call(self, exchange: Exchange, method: str, operation: Operation, dialect: Dialect, model_id: str | None,
             *, body: dict[str, Any] | None, raw: bytes | None, upload: Any, query: str | None,
             headers: Iterable[tuple[str, str]], routing: Mapping[str, str], given_id: str | None) -> Call:
        """The pipeline's `Call`; `routing` holds only the headers routing reads (`ROUTE_HEADERS`)."""
        exchange.model = model_of(body) if body is not None else None
        route = exchange.route
        size_mode = route.mode
        if not exchange.requested.startswith(CONTEXT_PREFIX) and body is not None and sizes_itself(body):
            # A bare path sizes by default, but never over the client's own choice.
            size_mode = SizeMode.PASSTHROUGH
        return Call(
            operation=operation, dialect=dialect, method=method, path=route.path, request_id=exchange.request_id,
            model=exchange.model, hints=parse_route_headers(routing), size_mode=size_mode, fixed_size=route.size,
            body=body, raw_body=raw, upload=upload, query=query,
            headers=forwardable_request_headers(headers, self.drop),
            request_id_is_uuid=not given_id or is_uuid(given_id), model_id=model_id)


def reply_headers(request_id: str, record: CallRecord) -> dict[str, str]:
    """The headers that explain an answer: its request id and what routing and sizing decided."""
    headers = {"X-Request-ID": request_id}
    if record.routing is not None:
        headers.update(decision_headers(record.routing))
    if record.sizing is not None:
        headers.update(record.sizing.headers())
    if record.truncated is not None:
        headers["X-Proxy-Context-Truncated"] = record.truncated
    return headers


def answer_headers(upstream: Mapping[str, str] | None, request_id: str, record: CallRecord) -> CIMultiDict[str]:
    """`answer_header_pairs` as the multidict aiohttp's responses take."""
    return CIMultiDict(answer_header_pairs(upstream, request_id, record))


def answer_header_pairs(upstream: Mapping[str, str] | None, request_id: str, record: CallRecord
                        ) -> list[tuple[str, str]]:
    """An answer's headers as name-value pairs: what the backend sent that may cross the proxy, less
    any the proxy's own (`reply_headers`) replace (llama.cpp sends its own X-Request-ID), then the
    proxy's own."""
    own = reply_headers(request_id, record)
    if not upstream:
        return list(own.items())
    names = tuple(own)
    replaced = _LOWERED_NAMES.get(names)
    if replaced is None:
        replaced = _LOWERED_NAMES[names] = frozenset(name.lower() for name in names)
    pairs = forwardable_response_pairs(upstream.items(), replaced)
    pairs += own.items()
    return pairs


# The proxy's own header names in lower case, per set of them an answer carries: they come from a fixed
# vocabulary, in a few combinations (routed or not, sized or not, a warning or not), so this stays small.
_LOWERED_NAMES: dict[tuple[str, ...], frozenset[str]] = {}


def refusal(exchange: Exchange, exc: OllamaProxyError) -> tuple[dict[str, str], dict[str, Any]]:
    """The headers and extra JSON fields of an error answer (noted as the exchange's failure)."""
    exchange.failure = str(exc)
    extra: dict[str, Any] = {}
    if isinstance(exc, NoBackendAvailable) and exc.reasons:
        extra["excluded"] = exc.reasons
    headers = reply_headers(exchange.request_id, exchange.record) if exchange.record else {
        "X-Request-ID": exchange.request_id}
    if isinstance(exc, NoBackendAvailable) and "X-Routing-Reason" not in headers:
        # Routing refused before deciding anything: the refusal explains itself in the same headers.
        headers.update(refusal_headers(exc))
    retry_after_s = getattr(exc, "retry_after_s", None)
    if retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
    return headers, extra


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__)
