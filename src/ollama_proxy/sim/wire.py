"""How the simulator puts bytes on the wire: JSON bodies, NDJSON and SSE streams, mid-stream faults.

Content types follow Ollama (gin adds `; charset=utf-8` to JSON). Mid-stream faults (`drop_mid_stream`,
`malformed_line`, and `error`/`hang` with `after_chunks`) are carried out here, so every endpoint
misbehaves the same way. Knows nothing about models or generation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import orjson
from aiohttp import web

from ollama_proxy.sim.faults import Fault
from ollama_proxy.sim.rules import SimError

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
FAULT_KEY = web.RequestKey("sim_fault", Fault)


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json",
                        charset="utf-8")


def error_response(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status)


async def read_json(request: web.Request, record: Callable[[str, Any], None]) -> dict[str, Any]:
    """The request's JSON object; malformed or missing bodies are 400s as in Ollama."""
    raw = await request.read()
    if not raw.strip():
        raise SimError(400, "missing request body")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SimError(400, f"invalid character in request body: {exc}") from None
    if not isinstance(body, dict):
        raise SimError(400, f"json: cannot unmarshal {type(body).__name__} into Go value of type request")
    record(request.path, body)
    return body


def fault_of(request: web.Request) -> Fault | None:
    return request.get(FAULT_KEY)


async def hang(request: web.Request) -> NoReturn:
    """The `hang` fault: answer nothing until the client gives up, then end as a cancelled request."""
    while request.transport is not None and not request.transport.is_closing():
        await asyncio.sleep(0.02)
    raise asyncio.CancelledError


def _cut(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.close()


class StreamCut(Exception):
    """A fault ended the stream; the handler stops writing and returns `LineStream.response`."""


class LineStream:
    """A streamed response written one JSON object per line (NDJSON) or per `data:` event (SSE)."""

    def __init__(self, request: web.Request, *, sse: bool = False) -> None:
        self._request = request
        self._sse = sse
        self._fault = fault_of(request)
        self._sent = 0
        self.response = web.StreamResponse(headers={"Content-Type": SSE if sse else NDJSON})

    def _frame(self, payload: bytes, event: str | None = None) -> bytes:
        if not self._sse:
            return payload + b"\n"
        # Anthropic's and the Responses streams name each event; their SDKs dispatch on the name.
        named = b"event: " + event.encode() + b"\n" if event else b""
        return named + b"data: " + payload + b"\n\n"

    async def open(self) -> None:
        await self.response.prepare(self._request)

    async def send(self, obj: Mapping[str, Any], event: str | None = None) -> None:
        """One line, or one SSE event (`event:` named when given)."""
        await self._maybe_fault()
        await self.response.write(self._frame(orjson.dumps(obj), event))
        self._sent += 1

    async def finish(self, trailer: bytes = b"") -> web.StreamResponse:
        """End the stream; SSE streams pass `data: [DONE]` as the trailer."""
        if trailer:
            await self.response.write(self._frame(trailer))
        await self.response.write_eof()
        return self.response

    async def _maybe_fault(self) -> None:
        fault = self._fault
        if fault is None or fault.before_response:
            return
        if self._sent != (1 if fault.after_chunks is None else fault.after_chunks):
            return
        if fault.mode == "malformed_line":
            self._fault = None  # one bad line, then the stream carries on
            await self.response.write(self._frame(b'{"model": "unterminated'))
            return
        if fault.mode == "drop_mid_stream":
            _cut(self._request)
        elif fault.mode == "error":
            # Ollama writes one `{"error"}` line and stops; its /v1 layer just ends the stream (ref. 6.5).
            if not self._sse:
                await self.response.write(self._frame(orjson.dumps({"error": fault.message})))
            await self.response.write_eof()
        elif fault.mode == "hang":
            await hang(self._request)
        raise StreamCut


async def send_whole(request: web.Request, body: Any) -> web.StreamResponse:
    """A non-streamed JSON reply, with any mid-stream fault applied to its one body."""
    fault = fault_of(request)
    if fault is None or fault.before_response:
        return json_response(body)
    payload = orjson.dumps(body)
    if fault.mode == "error":
        return error_response(fault.status, fault.message)
    if fault.mode == "malformed_line":
        return web.Response(body=payload[: len(payload) // 2], content_type="application/json",
                            charset="utf-8")
    response = web.StreamResponse(headers={"Content-Type": "application/json; charset=utf-8"})
    await response.prepare(request)
    if fault.mode == "hang":
        await hang(request)
    # drop_mid_stream: half the body, then the connection goes
    await response.write(payload[: len(payload) // 2])
    _cut(request)
    return response
