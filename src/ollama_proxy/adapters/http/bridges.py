"""Relays that translate between protocols while streaming: an OpenAI client in front of an Ollama
backend (native NDJSON in, OpenAI JSON or SSE out), and an Ollama client in front of an
OpenAI-type backend (SSE in, native NDJSON out).

The translation is `core.openai`'s; this module only reads the upstream, feeds the translators
and writes what they return. Every failure ends the client's stream with an error in the
client's own protocol, never a silent cut.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from ollama_proxy.adapters.http.replies import json_response
from ollama_proxy.adapters.upstream.aiohttp_client import UpstreamReply
from ollama_proxy.core.openai.errors import BackendReplyError
from ollama_proxy.core.openai.requests import ReplyContext
from ollama_proxy.core.openai.responses import error_from_native, new_completion_id, reply_from_native
from ollama_proxy.core.openai.reverse_requests import NativeReplyContext
from ollama_proxy.core.openai.reverse_responses import NativeStreamTranslator, native_error, native_reply
from ollama_proxy.core.openai.sse import SseDecoder
from ollama_proxy.core.openai.stream import StreamTranslator
from ollama_proxy.core.streams import LineSplitter, LineTooLong
from ollama_proxy.errors import UpstreamError

# Called with the final native object (or None) once the upstream answered; returns headers to add
# when they can still be sent (non-streamed replies).
FinalHook = Callable[[dict[str, Any] | None], dict[str, str]]
# Called when a stream already under way breaks: the reason, and the backend error if it was one.
FailureHook = Callable[[str, UpstreamError | None], None]

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
NDJSON_HEADERS = {"Content-Type": "application/x-ndjson"}
# Replies the proxy must read whole (to translate or check them) are refused past this size.
WHOLE_REPLY_LIMIT = 64 * 1024 * 1024
_rng = random.Random()


@dataclass(slots=True)
class RelayHooks:
    """What a relay reports back to the request it serves."""

    on_final: FinalHook
    on_failure: FailureHook
    # The client's response once prepared: from then on a failure can only end the stream.
    started: web.StreamResponse | None = None

    async def start(self, request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        await response.prepare(request)
        self.started = response
        return response


def _json_or_none(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


async def _whole_or_error_body(upstream: UpstreamReply) -> bytes:
    return await (upstream.read_error_body() if upstream.status >= 400 else upstream.read(WHOLE_REPLY_LIMIT))


async def openai_from_native(request: web.Request, upstream: UpstreamReply, context: ReplyContext,
                             headers: dict[str, str], hooks: RelayHooks, backend_id: str) -> web.StreamResponse:
    """An Ollama backend's native reply, as the OpenAI response the client asked for."""
    completion_id = new_completion_id(context.kind, _rng)
    created = int(time.time())
    if upstream.status >= 400 or not context.stream:
        payload = _json_or_none(await _whole_or_error_body(upstream))
        if upstream.status >= 400:
            status, error = error_from_native(upstream.status, payload)
            return json_response(error, status=status, headers=headers)
        if not isinstance(payload, dict):
            raise UpstreamError(backend_id, "sent a reply that is not a JSON object")
        headers = {**headers, **hooks.on_final(payload)}
        return json_response(reply_from_native(payload, context, completion_id=completion_id, created=created),
                             headers=headers)

    response = await hooks.start(request, web.StreamResponse(status=200, headers={**headers, **SSE_HEADERS}))
    translator = StreamTranslator(context, completion_id=completion_id, created=created)
    splitter = LineSplitter()
    final: dict[str, Any] | None = None

    async def abort(reason: str, error: UpstreamError | None) -> None:
        hooks.on_failure(reason, error)
        await response.write(translator.abort(reason, 502))

    while not translator.finished:
        try:
            chunk = await upstream.readany()
            lines = splitter.feed(chunk) if chunk else splitter.flush()
        except UpstreamError as exc:
            await abort(str(exc), exc)
            break
        except LineTooLong as exc:
            await abort(f"backend {backend_id!r} sent {exc}", None)
            break
        for line in lines:
            native = _json_or_none(line)
            if not isinstance(native, dict):
                await abort(f"backend {backend_id!r} sent a line that is not JSON: {line[:80]!r}", None)
                break
            if native.get("done"):
                final = native
            await response.write(translator.feed(native))
        if not chunk:
            await response.write(translator.close())
            break
    hooks.on_final(final)
    await response.write_eof()
    return response


async def native_from_openai(request: web.Request, upstream: UpstreamReply, context: NativeReplyContext,
                             headers: dict[str, str], hooks: RelayHooks, backend_id: str) -> web.StreamResponse:
    """An OpenAI-type backend's reply, as the native Ollama response the client asked for."""
    started = time.time()
    if upstream.status >= 400 or not context.stream:
        payload = _json_or_none(await _whole_or_error_body(upstream))
        if upstream.status >= 400:
            status, error = native_error(upstream.status, payload)
            return json_response(error, status=status, headers=headers)
        try:
            reply = native_reply(payload if isinstance(payload, dict) else {}, context, started=started,
                                 now=time.time())
        except BackendReplyError as exc:
            return json_response({"error": f"backend {backend_id!r}: {exc}"}, status=502, headers=headers)
        return json_response(reply, headers={**headers, **hooks.on_final(reply)})

    response = await hooks.start(request, web.StreamResponse(status=200, headers={**headers, **NDJSON_HEADERS}))
    translator = NativeStreamTranslator(context, started=started)
    decoder = SseDecoder()
    final: dict[str, Any] | None = None
    while not translator.finished:
        failure: tuple[str, UpstreamError | None] | None = None
        try:
            chunk = await upstream.readany()
            events = decoder.feed(chunk) if chunk else decoder.flush()
        except UpstreamError as exc:
            failure = (str(exc), exc)
        except LineTooLong as exc:
            failure = (f"backend {backend_id!r} sent {exc}", None)
        if failure is not None:
            chunk = b""
            hooks.on_failure(*failure)
            lines = [translator.abort(failure[0])]
        else:
            now = time.time()
            lines = [line for event in events for line in translator.feed(event, now)]
            if not chunk:
                # llama.cpp answers an over-long streamed prompt with an empty 200 stream: close()
                # turns "no finish at all" into an error line.
                ending = translator.close(now)
                if ending and "error" in ending[-1]:
                    upstream.forget_connection()
                lines += ending
        for line in lines:
            if line.get("done"):
                final = line
            await response.write(orjson.dumps(line) + b"\n")
        if not chunk:
            break
    hooks.on_final(final)
    await response.write_eof()
    return response
