"""The proxy's edge: it connects only to configured backends, and every route is behind the API key.

Requests go out over raw sockets (`asyncio.open_connection`) so that the request target and header
bytes reach the proxy exactly as written here; a client library would normalise `//host:port/...`,
percent-encodings or non-ASCII header bytes before sending. A "canary" listener on another loopback
port records any connection it gets: a proxy that can be talked into connecting somewhere other than
its configured backend shows up there. A hook on the simulator records each request the proxy
forwarded (the proxy always sends X-Request-ID; its own health polls do not), including `/sim/*`
requests, which the simulator's own statistics leave out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from rawhttp import RawResponse, parse_response

from ollama_proxy.sim import SimConfig, SimServer

TIMEOUT_S = 10.0
KEY = "k1"
BACKEND_KEY = "backend-secret"
METHODS = ("GET", "POST", "DELETE", "OPTIONS", "HEAD")
GENERATE = {"model": "llama3.2", "prompt": "hi", "stream": False}
# Would make every later simulator answer an error if the proxy forwarded it.
SIM_FAULT = {"mode": "error", "status": 418, "count": 1000, "message": "forwarded-to-sim"}


# --- raw HTTP over a socket ------------------------------------------------------------------------


def _bytes(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode()


def build_request(method: str, target: str | bytes, *, host: str,
                  headers: Iterable[tuple[str | bytes, str | bytes]] = (), body: bytes | None = None) -> bytes:
    lines = [_bytes(method) + b" " + _bytes(target) + b" HTTP/1.1", b"Host: " + _bytes(host)]
    lines += [_bytes(name) + b": " + _bytes(value) for name, value in headers]
    if body is not None:
        lines += [b"Content-Type: application/json", b"Content-Length: " + str(len(body)).encode()]
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


async def raw_request(port: int, method: str, target: str | bytes, *, host: str | None = None,
                      headers: Iterable[tuple[str | bytes, str | bytes]] = (), body: bytes | None = None
                      ) -> RawResponse:
    """Send one request byte for byte and read the answer until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(build_request(method, target, host=host or f"127.0.0.1:{port}", headers=headers, body=body))
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), TIMEOUT_S)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return parse_response(raw, method)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


# --- the canary and the recording simulator ------------------------------------------------------


class Canary:
    """A loopback listener that nobody should ever connect to; it answers 418 and remembers."""

    def __init__(self) -> None:
        self.hits: list[bytes] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            try:
                first = await asyncio.wait_for(reader.read(512), 1.0)
            except (TimeoutError, ConnectionError):
                first = b""
            self.hits.append(first or b"<connected, sent nothing>")
            writer.write(b"HTTP/1.1 418 canary\r\nContent-Length: 6\r\nConnection: close\r\n\r\ncanary")
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._handlers.discard(task)

    async def __aenter__(self) -> Canary:
        self._server = await asyncio.start_server(self._on_connect, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)


@dataclass
class RecordingSim:
    sim: SimServer
    # (method, raw path, headers) of every request that came through the proxy
    forwarded: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.sim.url

    async def stats(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as session, session.get(f"{self.sim.url}/sim/stats") as r:
            assert r.status == 200
            return await r.json()

    def forwarded_paths(self) -> list[str]:
        return [path for _, path, _ in self.forwarded]


@pytest.fixture
async def recording_sim() -> AsyncIterator[RecordingSim]:
    sim = SimServer(SimConfig(models=["llama3.2", "nomic-embed-text"], time_scale=0.0), host="127.0.0.1", port=0)
    recording = RecordingSim(sim)

    async def record(request: web.Request, _response: web.StreamResponse) -> None:
        if "X-Request-ID" in request.headers:
            recording.forwarded.append((request.method, request.raw_path,
                                        {k.lower(): v for k, v in request.headers.items()}))

    sim.app.on_response_prepare.append(record)
    async with sim:
        yield recording


@pytest.fixture
async def canary() -> AsyncIterator[Canary]:
    async with Canary() as listener:
        yield listener


def proxy_config(sim_url: str, *, api_keys: Sequence[str] = (), backend_key: str | None = None) -> dict[str, Any]:
    backend: dict[str, Any] = {"id": "sim", "endpoint": sim_url}
    if backend_key is not None:
        backend["api_key"] = backend_key
    config: dict[str, Any] = {"backends": [backend]}
    if api_keys:
        config["server"] = {"api_keys": list(api_keys)}
    return config


def is_api_path(path: str) -> bool:
    return path in ("/", "/api", "/v1") or path.startswith(("/api/", "/v1/"))


def json_error_problem(response: RawResponse, method: str) -> str | None:
    """What is wrong with a proxy-generated error answer, or None: it must carry a JSON error body."""
    if not response.headers.get("content-type", "").startswith("application/json"):
        return f"error answer is not JSON (Content-Type {response.headers.get('content-type')!r})"
    if method == "HEAD":
        return None
    try:
        body = response.json()
    except ValueError:
        return "error answer has a body that does not parse as JSON"
    if not isinstance(body, dict) or "error" not in body:
        return f"error answer has no 'error' field: {body!r}"
    return None


# --- the harness itself ----------------------------------------------------------------------------


async def test_canary_and_raw_client_see_a_direct_connection(canary: Canary, recording_sim: RecordingSim) -> None:
    """The instruments work: a connection to the canary is recorded, a raw request is parsed, and a
    request carrying X-Request-ID is recorded by the simulator hook."""
    answer = await raw_request(canary.port, "GET", "/api/tags")
    assert answer.status == 418 and answer.body == b"canary"
    assert len(canary.hits) == 1 and canary.hits[0].startswith(b"GET /api/tags HTTP/1.1")
    tags = await raw_request(port_of(recording_sim.url), "GET", "/api/tags", headers=[("X-Request-ID", "t")])
    assert tags.status == 200 and "models" in tags.json()
    streamed = await raw_request(port_of(recording_sim.url), "POST", "/api/generate",
                                 body=json.dumps({"model": "llama3.2", "prompt": "hi"}).encode())
    assert streamed.status == 200 and b'"done":true' in streamed.body.replace(b" ", b"")
    assert recording_sim.forwarded_paths() == ["/api/tags"]


# --- 1. SSRF: whatever the target, only the configured backend is contacted -------------------------

# Shapes whose normalised path is a real API path (`/api/tags`): the proxy may serve them from the
# configured backend. Every other shape normalises to a non-API path and gets the proxy's own 404
# (or a 400 if the proxy refuses the target outright).
MAY_BE_SERVED = frozenset({"absolute-form", "double-slash-api"})


def target_shapes(canary_port: int) -> dict[str, str]:
    c = f"127.0.0.1:{canary_port}"
    return {
        "network-path": f"//{c}/api/tags",
        "network-path-bare": f"//{c}",
        "triple-slash": f"///{c}/api/tags",
        "context-auto-network-path": f"/proxy-context/auto//{c}/api/generate",
        "context-size-network-path": f"/proxy-context/8192//{c}/api/chat",
        "backslashes": f"\\\\{c}/api/tags",
        "encoded-slash": f"/%2F{c}/api/tags",
        "encoded-double-slash": f"/%2f%2f{c}/api/tags",
        "dot-dot-network-path": f"/api/..//{c}/x",
        "userinfo": f"/@{c}/api/tags",
        "absolute-form": f"http://{c}/api/tags",
        "double-slash-api": "//api/tags",
        "dot-dot-escape": "/api/../../etc/passwd",
        "sim-stats": "/sim/stats",
        "sim-faults": "/sim/faults",
        "admin": "/admin",
        "dotenv": "/.env",
    }


def _body_for(shape: str, method: str) -> bytes | None:
    if method not in ("POST", "DELETE"):
        return None
    return json.dumps(SIM_FAULT if shape == "sim-faults" else GENERATE).encode()


def _ssrf_problem(shape: str, response: RawResponse, method: str, *, key_sent: bool, keys_configured: bool
                  ) -> str | None:
    status = response.status
    if keys_configured and not key_sent:
        if status not in (400, 401):
            return f"expected 401 without the API key, got {status}"
        if status == 400 and "x-request-id" not in response.headers:
            return None  # refused by the HTTP parser before the app saw it: see the test below
        return json_error_problem(response, method)
    if response.forwarded:
        if shape not in MAY_BE_SERVED:
            return f"forwarded to the backend ({status}): the normalised path is not an API path"
        if status >= 500:
            return f"forwarded answer {status}"
        return None
    if shape in MAY_BE_SERVED and status < 400:
        return None  # answered by the proxy itself (e.g. OPTIONS on an API path)
    if status not in (400, 404):
        return f"expected the proxy's own 400 or 404, got {status}"
    if status == 404 and "x-request-id" not in response.headers:
        return "the proxy's 404 has no X-Request-ID"
    if "x-request-id" not in response.headers:
        return None  # refused by the HTTP parser before the app saw it: see the test below
    return json_error_problem(response, method)


@pytest.mark.parametrize("auth", ["open", "keys-sent", "keys-missing"])
async def test_no_request_target_reaches_anything_but_the_backend(
        auth: str, proxy_factory: Callable[..., Any], recording_sim: RecordingSim, canary: Canary) -> None:
    keys_configured = auth != "open"
    url = await proxy_factory(proxy_config(recording_sim.url, api_keys=[KEY] if keys_configured else (),
                                           backend_key=BACKEND_KEY if keys_configured else None))
    port = port_of(url)
    key_headers = [("X-API-Key", KEY)] if auth == "keys-sent" else []
    problems: list[str] = []
    for shape, target in target_shapes(canary.port).items():
        for method in METHODS:
            hits_before = len(canary.hits)
            # The Host header names the canary too: the proxy must not take it as a destination.
            try:
                response = await raw_request(port, method, target, host=f"127.0.0.1:{canary.port}",
                                             headers=key_headers, body=_body_for(shape, method))
            except (AssertionError, TimeoutError, ConnectionError) as exc:
                problems.append(f"{method} {target}: no proper HTTP response ({type(exc).__name__}: {exc})")
                continue
            if len(canary.hits) > hits_before:
                problems.append(f"{method} {target}: THE CANARY GOT A CONNECTION: {canary.hits[-1][:120]!r}")
            problem = _ssrf_problem(shape, response, method, key_sent=auth == "keys-sent",
                                    keys_configured=keys_configured)
            if problem:
                problems.append(f"{method} {target}: {problem}; answer {response.short()}")
    await asyncio.sleep(0.05)  # a connection the proxy opened late still lands before the count
    assert not canary.hits, f"the canary received {len(canary.hits)} connection(s): {canary.hits[:3]}"
    stats = await recording_sim.stats()
    assert stats["fault"] is None, "POST /sim/faults reached the simulator through the proxy"
    sim_paths = recording_sim.forwarded_paths()
    assert not [p for p in sim_paths if p.startswith("/sim")], f"/sim/* forwarded: {sim_paths}"
    assert all(is_api_path(p) for p in stats["requests"]), f"non-API paths reached the simulator: {stats['requests']}"
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems)


@pytest.mark.parametrize("target", [
    pytest.param("\\\\127.0.0.1:9/api/tags", id="backslashes"),
    pytest.param("\\api\\tags", id="backslash-path"),
    pytest.param("*", id="asterisk-form"),
    pytest.param("api/tags", id="no-leading-slash"),
])
async def test_a_target_the_http_parser_refuses_still_gets_a_json_400(
        target: str, proxy_factory: Callable[..., Any], recording_sim: RecordingSim) -> None:
    """Refused below the application (aiohttp's request parser), the answer is still the proxy's
    JSON error, never a plain-text one."""
    url = await proxy_factory(proxy_config(recording_sim.url))
    for method in ("GET", "POST"):
        response = await raw_request(port_of(url), method, target, body=b"{}" if method == "POST" else None)
        assert response.status in (400, 404), response.short()
        assert json_error_problem(response, method) is None, response.short()
    assert recording_sim.forwarded == []


async def test_routing_header_naming_another_host_is_refused(
        proxy_factory: Callable[..., Any], recording_sim: RecordingSim, canary: Canary) -> None:
    url = await proxy_factory(proxy_config(recording_sim.url))
    for value in (f"http://127.0.0.1:{canary.port}", f"127.0.0.1:{canary.port}", "../sim"):
        response = await raw_request(port_of(url), "POST", "/api/generate", headers=[("X-Target-Backend", value)],
                                     body=json.dumps(GENERATE).encode())
        assert response.status in (400, 404), response.short()
        assert json_error_problem(response, "POST") is None, response.short()
    assert not canary.hits


@pytest.mark.parametrize(("target", "expected_path"), [
    ("//api/tags", "/api/tags"),
    ("/api//tags", "/api/tags"),
    ("/api/./tags", "/api/tags"),
    ("/v1/../api/tags", "/api/tags"),
])
async def test_normalised_api_paths_reach_the_backend_in_origin_form(
        target: str, expected_path: str, proxy_factory: Callable[..., Any], recording_sim: RecordingSim) -> None:
    url = await proxy_factory(proxy_config(recording_sim.url))
    response = await raw_request(port_of(url), "GET", target)
    assert response.status in (200, 400, 404), response.short()
    if response.status == 200:
        assert response.forwarded and "models" in response.json()
        assert recording_sim.forwarded_paths() == [expected_path]
    else:
        assert json_error_problem(response, "GET") is None, response.short()
        assert recording_sim.forwarded_paths() == []


@pytest.mark.parametrize("path", ["/sim/stats", "/sim/reset", "/admin", "/.env", "/debug/pprint", "/apix",
                                  "/api", "/v1x/models", "/metrics/../sim/stats"])
async def test_non_api_paths_get_the_proxys_own_404(path: str, proxy_factory: Callable[..., Any],
                                                    recording_sim: RecordingSim) -> None:
    url = await proxy_factory(proxy_config(recording_sim.url))
    for method in ("GET", "POST"):
        response = await raw_request(port_of(url), method, path, body=b"{}" if method == "POST" else None)
        if path == "/api":  # Ollama's own path space: the proxy may forward it
            assert response.status < 500, response.short()
            continue
        assert response.status == 404, response.short()
        assert not response.forwarded, response.short()
        assert "x-request-id" in response.headers, response.short()
        assert json_error_problem(response, method) is None, response.short()
    assert not [p for p in recording_sim.forwarded_paths() if not is_api_path(p)]


# --- 2. Authentication ---------------------------------------------------------------------------

BLOB = "/api/blobs/sha256:" + "0" * 64
GUARDED: list[tuple[str, str, Any]] = [
    ("GET", "/", None),
    ("HEAD", "/", None),
    ("GET", "/metrics", None),
    ("GET", "/backends", None),
    ("GET", "/efficiency", None),
    ("POST", "/efficiency", {"mode": "efficiency"}),
    ("GET", "/thermal", None),
    ("GET", "/api/version", None),
    ("GET", "/api/tags", None),
    ("POST", "/api/generate", GENERATE),
    ("POST", "/api/chat", {"model": "llama3.2", "stream": False, "messages": [{"role": "user", "content": "x"}]}),
    ("DELETE", "/api/delete", {"model": "nothing-here"}),
    ("HEAD", BLOB, None),
    ("OPTIONS", "/api/tags", None),
    ("OPTIONS", "/", None),
    ("GET", "/v1/models", None),
    ("POST", "/v1/chat/completions", {"model": "llama3.2", "messages": [{"role": "user", "content": "x"}]}),
    ("GET", "/proxy-context/auto/api/tags", None),
    ("POST", "/proxy-context/8192/api/generate", GENERATE),
    ("POST", "/proxy-context/auto/api/chat", {"model": "llama3.2", "stream": False,
                                             "messages": [{"role": "user", "content": "x"}]}),
    ("GET", "/admin", None),
    ("GET", "/sim/stats", None),
]


@pytest.mark.parametrize("backend_key", [None, BACKEND_KEY])
async def test_every_route_but_get_health_needs_the_key(
        backend_key: str | None, proxy_factory: Callable[..., Any], recording_sim: RecordingSim) -> None:
    url = await proxy_factory(proxy_config(recording_sim.url, api_keys=[KEY], backend_key=backend_key))
    port = port_of(url)
    problems: list[str] = []
    refused_variants: list[tuple[str, list[tuple[str, str]]]] = [
        ("no key", []),
        ("wrong bearer", [("Authorization", "Bearer nope")]),
        ("wrong X-API-Key", [("X-API-Key", "nope")]),
        ("key prefix", [("X-API-Key", KEY[:-1])]),
        # A preflight is an OPTIONS with Access-Control-Request-Method: this one is not.
        ("allowed origin only", [("Origin", "http://localhost")]),
    ]
    for method, path, body in GUARDED:
        data = None if body is None else json.dumps(body).encode()
        for label, headers in refused_variants:
            response = await raw_request(port, method, path, headers=headers, body=data)
            if response.status != 401:
                problems.append(f"{label}: {method} {path} -> {response.status}, expected 401: {response.short()}")
            elif (why := json_error_problem(response, method)) is not None:
                problems.append(f"{label}: {method} {path}: {why}")
    refused_forwarded = list(recording_sim.forwarded)
    for method, path, body in GUARDED:
        data = None if body is None else json.dumps(body).encode()
        for label, headers in (("bearer", [("Authorization", f"Bearer {KEY}")]), ("X-API-Key", [("X-API-Key", KEY)])):
            response = await raw_request(port, method, path, headers=headers, body=data)
            if response.status == 401 or (response.status >= 500 and response.status not in (502, 503, 504)):
                problems.append(f"{label}: {method} {path} with the right key -> {response.status}: "
                                f"{response.short()}")
    health = await raw_request(port, "GET", "/health")
    assert health.status == 200, health.short()
    problems += [f"refused request reached the backend: {method} {path}" for method, path, _ in refused_forwarded]
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems)


@pytest.mark.parametrize("keys", [(), (KEY,)], ids=["open", "keys"])
async def test_cors_preflight_is_answered_by_the_proxy(
        keys: tuple[str, ...], proxy_factory: Callable[..., Any], recording_sim: RecordingSim) -> None:
    url = await proxy_factory(proxy_config(recording_sim.url, api_keys=keys))
    port = port_of(url)
    for path in ("/api/chat", "/v1/chat/completions", "/api/tags", "/proxy-context/auto/api/generate"):
        preflight = [("Origin", "http://localhost"), ("Access-Control-Request-Method", "POST"),
                     ("Access-Control-Request-Headers", "content-type, authorization")]
        response = await raw_request(port, "OPTIONS", path, headers=preflight)
        assert response.status == 204, response.short()
        assert response.headers.get("access-control-allow-origin") == "http://localhost", response.short()
        assert "POST" in response.headers.get("access-control-allow-methods", ""), response.short()
        foreign = [("Origin", "https://evil.example"), ("Access-Control-Request-Method", "POST")]
        refused = await raw_request(port, "OPTIONS", path, headers=foreign)
        assert refused.status == 403, refused.short()
        assert json_error_problem(refused, "OPTIONS") is None, refused.short()
        assert "access-control-allow-origin" not in refused.headers
    assert recording_sim.forwarded == [], "a preflight was forwarded to the backend"
    stats = await recording_sim.stats()
    assert not {"/api/chat", "/v1/chat/completions"} & set(stats["requests"]), stats["requests"]


@pytest.mark.parametrize(("name", "value"), [
    pytest.param(b"X-API-Key", b"\xff\xfe", id="x-api-key-raw-high-bytes"),
    pytest.param(b"Authorization", b"Bearer \xff\xfe", id="bearer-raw-high-bytes"),
    pytest.param(b"X-API-Key", "é".encode(), id="x-api-key-utf8"),
    pytest.param(b"Authorization", "Bearer é".encode(), id="bearer-utf8"),
    pytest.param(b"X-API-Key", "k1é".encode(), id="x-api-key-key-plus-utf8"),
    pytest.param(b"X-API-Key", b"k1\xe9", id="x-api-key-latin1"),
    pytest.param(b"Authorization", b"Bearer k1\x80", id="bearer-key-plus-byte"),
    pytest.param(b"X-API-Key", b"", id="x-api-key-empty"),
    pytest.param(b"Authorization", b"Bearer", id="bearer-empty"),
])
async def test_non_ascii_keys_are_refused_with_401(name: bytes, value: bytes, proxy_factory: Callable[..., Any],
                                                   recording_sim: RecordingSim) -> None:
    url = await proxy_factory(proxy_config(recording_sim.url, api_keys=[KEY]))
    for method, path in (("GET", "/api/tags"), ("POST", "/api/generate"), ("GET", "/v1/models")):
        body = json.dumps(GENERATE).encode() if method == "POST" else None
        response = await raw_request(port_of(url), method, path, headers=[(name, value)], body=body)
        assert response.status == 401, response.short()
        assert json_error_problem(response, method) is None, response.short()
    ok = await raw_request(port_of(url), "GET", "/api/tags", headers=[("X-API-Key", KEY)])
    assert ok.status == 200, ok.short()
    assert recording_sim.forwarded_paths() == ["/api/tags"]


@pytest.mark.parametrize("backend_key", [None, BACKEND_KEY])
async def test_client_credentials_are_never_forwarded(
        backend_key: str | None, proxy_factory: Callable[..., Any], recording_sim: RecordingSim) -> None:
    url = await proxy_factory(proxy_config(recording_sim.url, api_keys=[KEY], backend_key=backend_key))
    port = port_of(url)
    chat = {"model": "llama3.2", "stream": False, "messages": [{"role": "user", "content": "x"}]}
    variants: list[list[tuple[str | bytes, str | bytes]]] = [
        [("Authorization", f"Bearer {KEY}")],
        [("X-API-Key", KEY)],
        [("X-API-Key", KEY), ("Authorization", f"Bearer {KEY}")],
        [(b"authorization", f"Bearer {KEY}".encode())],
        [(b"x-api-key", KEY.encode()), (b"X-Api-Key", KEY.encode())],
    ]
    openai_chat = {"model": "llama3.2", "messages": chat["messages"]}
    calls = [("POST", "/api/chat", chat), ("GET", "/api/tags", None), ("POST", "/v1/chat/completions", openai_chat),
             ("POST", "/proxy-context/auto/api/chat", chat)]
    for headers in variants:
        for method, path, body in calls:
            response = await raw_request(port, method, path, headers=headers,
                                         body=None if body is None else json.dumps(body).encode())
            assert response.status == 200, response.short()
    assert len(recording_sim.forwarded) == len(variants) * len(calls)
    for method, path, headers in recording_sim.forwarded:
        assert "x-api-key" not in headers, (method, path, headers)
        assert KEY not in headers.get("authorization", ""), (method, path, headers)
        if backend_key is None:
            assert "authorization" not in headers, (method, path, headers)
        else:
            assert headers["authorization"] == f"Bearer {backend_key}", (method, path, headers)
