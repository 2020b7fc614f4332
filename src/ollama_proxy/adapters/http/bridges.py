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
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from ollama_proxy.adapters.http.replies import json_response
from ollama_proxy.core.openai.errors import BackendReplyError
from ollama_proxy.core.openai.requests import ReplyContext
from ollama_proxy.core.openai.responses import error_from_native, new_completion_id, reply_from_native
from ollama_proxy.core.openai.reverse_requests import NativeReplyContext
from ollama_proxy.core.openai.reverse_responses import NativeStreamTranslator, native_error, native_reply
from ollama_proxy.core.openai.sse import SseDecoder
from ollama_proxy.core.openai.stream import StreamTranslator
from ollama_proxy.core.streams import LineSplitter

# Called with the final native object (or None) once the upstream answered; returns headers to add
# when they can still be sent (non-streamed replies).
FinalHook = Callable[[dict[str, Any] | None], dict[str, str]]

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
NDJSON_HEADERS = {"Content-Type": "application/x-ndjson"}
_rng = random.Random()


def _json_or_none(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


async def openai_from_native(request: web.Request, upstream: aiohttp.ClientResponse, context: ReplyContext,
                             headers: dict[str, str], on_final: FinalHook, backend_id: str) -> web.StreamResponse:
    """An Ollama backend's native reply, as the OpenAI response the client asked for."""
    completion_id = new_completion_id(context.kind, _rng)
    created = int(time.time())
    if upstream.status >= 400 or not context.stream:
        payload = _json_or_none(await upstream.read())
        if upstream.status >= 400:
            status, error = error_from_native(upstream.status, payload)
            return json_response(error, status=status, headers=headers)
        if not isinstance(payload, dict):
            status, error = error_from_native(502, {"error": f"backend {backend_id!r} sent no JSON"})
            return json_response(error, status=status, headers=headers)
        headers = {**headers, **on_final(payload)}
        return json_response(reply_from_native(payload, context, completion_id=completion_id, created=created),
                             headers=headers)

    response = web.StreamResponse(status=200, headers={**headers, **SSE_HEADERS})
    await response.prepare(request)
    translator = StreamTranslator(context, completion_id=completion_id, created=created)
    splitter = LineSplitter()
    final: dict[str, Any] | None = None
    while not translator.finished:
        try:
            chunk = await upstream.content.readany()
        except (TimeoutError, aiohttp.ClientError) as exc:
            await response.write(translator.abort(f"backend {backend_id!r} broke off the stream: {exc}", 502))
            break
        lines = splitter.feed(chunk) if chunk else splitter.flush()
        for line in lines:
            native = _json_or_none(line)
            if not isinstance(native, dict):
                await response.write(translator.abort(f"backend {backend_id!r} sent a line that is not JSON: "
                                                      f"{line[:80]!r}", 502))
                break
            if native.get("done"):
                final = native
            await response.write(translator.feed(native))
        if not chunk:
            await response.write(translator.close())
            break
    on_final(final)
    await response.write_eof()
    return response


async def native_from_openai(request: web.Request, upstream: aiohttp.ClientResponse, context: NativeReplyContext,
                             headers: dict[str, str], on_final: FinalHook, backend_id: str) -> web.StreamResponse:
    """An OpenAI-type backend's reply, as the native Ollama response the client asked for."""
    started = time.time()
    if upstream.status >= 400 or not context.stream:
        payload = _json_or_none(await upstream.read())
        if upstream.status >= 400:
            status, error = native_error(upstream.status, payload)
            return json_response(error, status=status, headers=headers)
        try:
            reply = native_reply(payload if isinstance(payload, dict) else {}, context, started=started,
                                 now=time.time())
        except BackendReplyError as exc:
            return json_response({"error": f"backend {backend_id!r}: {exc}"}, status=502, headers=headers)
        return json_response(reply, headers={**headers, **on_final(reply)})

    response = web.StreamResponse(status=200, headers={**headers, **NDJSON_HEADERS})
    await response.prepare(request)
    translator = NativeStreamTranslator(context, started=started)
    decoder = SseDecoder()
    final: dict[str, Any] | None = None
    while not translator.finished:
        try:
            chunk = await upstream.content.readany()
        except (TimeoutError, aiohttp.ClientError) as exc:
            chunk = b""
            lines = [translator.abort(f"backend {backend_id!r} broke off the stream: {exc}")]
        else:
            now = time.time()
            lines = [line for event in (decoder.feed(chunk) if chunk else decoder.flush())
                     for line in translator.feed(event, now)]
            if not chunk:
                # llama.cpp answers an over-long streamed prompt with an empty 200 stream: close()
                # turns "no finish at all" into an error line.
                ending = translator.close(now)
                if ending and "error" in ending[-1]:
                    forget_connection(upstream)
                lines += ending
        for line in lines:
            if line.get("done"):
                final = line
            await response.write(orjson.dumps(line) + b"\n")
        if not chunk:
            break
    on_final(final)
    await response.write_eof()
    return response


def forget_connection(upstream: aiohttp.ClientResponse) -> None:
    """Close the connection behind a stream that ended without finishing, so it is not reused.

    llama.cpp resets the connection behind its empty over-long-prompt stream a moment after the
    stream ended cleanly; pooled, it fails the next request as "connection reset by peer", which
    counts against a healthy backend. aiohttp hands a connection back to its pool at end of file,
    before the reader sees b"", so `upstream.close()` no longer reaches it: the transport itself
    is closed (the pool skips closed ones). Call it right after the read that returned b"", before
    the next await, while no other request is likely to have picked the connection up. The `/v1`
    passthrough relay needs the same for the same stream.
    """
    protocol = getattr(upstream, "_protocol", None)  # aiohttp 3.x keeps it after the release
    if protocol is not None:
        protocol.close()
    upstream.close()
