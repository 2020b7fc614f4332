"""From a backend's answer to a `Reply`: relayed as it came, or translated while it streams between the
native protocol and the client's (OpenAI chat, OpenAI Responses, Anthropic Messages; `core.translation`).

Each relay reads what must be read before anything reaches the client (an error body, a whole
reply, the first piece of a stream) and raises `UpstreamError` when that fails, so the pipeline can
still fail over; after that, a failure ends the stream with a `StreamFailure` (or the translated
error event) as its last piece, never a silent cut. Learning goes to the `Learner`: the final
native object when there is one, and every failure once the stream is under way.

Bounds: error bodies ERROR_BODY_LIMIT, replies read whole WHOLE_REPLY_LIMIT, the stream tail
`core.streams.TAIL_LIMIT`, translated lines `core.streams.MAX_LINE_BYTES`.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncGenerator
from typing import Any, Protocol

import orjson

from ollama_proxy.core.openai.errors import BackendReplyError
from ollama_proxy.core.openai.reverse_requests import NativeReplyContext
from ollama_proxy.core.openai.reverse_responses import (
    EMPTY_STREAM,
    NativeStreamTranslator,
    native_error,
    native_reply,
)
from ollama_proxy.core.openai.sse import SseDecoder
from ollama_proxy.core.operations import Dialect, Operation
from ollama_proxy.core.streams import LastLine, LineSplitter, LineTooLong, StreamFailure
from ollama_proxy.core.translation import UNFINISHED_STREAM, ReplyTranslator, Translation
from ollama_proxy.errors import UpstreamError
from ollama_proxy.service.reply import CallRecord, Framing, Piece, Reply, Sink
from ollama_proxy.service.transport import ERROR_BODY_LIMIT, UpstreamReply

# Replies the proxy must read whole (to check or translate them) are refused past this size.
WHOLE_REPLY_LIMIT = 64 * 1024 * 1024
# A reply with a known length up to this size is read whole and sent in one write.
_BUFFER_LIMIT = 1 << 20
_DONE = b'"done":true'
_rng = random.Random()


class Learner(Protocol):
    """Where a relay reports what the answer taught (the pipeline's per-call learning)."""

    def final(self, final: dict[str, Any] | None) -> None:
        """The final native object of an inference (None: the answer had none)."""

    def failed(self, reason: str, error: UpstreamError | None) -> None:
        """A stream under way broke; `error` when the backend broke it."""


def json_object(payload: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


async def relay(upstream: UpstreamReply, *, operation: Operation, dialect: Dialect, backend_id: str,
                record: CallRecord, learner: Learner) -> Reply:
    """The backend's answer as it came: bytes through, untouched; only a whole inference reply and a
    stream's last line are looked at, for learning."""
    status, headers = upstream.status, upstream.headers
    if status >= 400:
        body = await upstream.read_error_body()
        if len(body) >= ERROR_BODY_LIMIT:
            body = orjson.dumps({"error": f"backend {backend_id!r} answered {status} with an error longer than "
                                          f"{ERROR_BODY_LIMIT} bytes: {body[:300].decode(errors='replace')}"})
        return Reply(status, record, Framing.RAW, headers, body=body)
    length = upstream.content_length
    # A whole JSON reply (stream: false) is read before a byte is sent, so a backend that breaks
    # off mid-body fails over or gets a JSON error, never a 200 with half an object.
    if ((length is not None and length <= _BUFFER_LIMIT and not upstream.is_chunked)
            or headers.get("Content-Type", "").startswith("application/json")):
        body = await upstream.read(WHOLE_REPLY_LIMIT)
        if status == 200 and operation.runs_model:
            final = json_object(body)
            if final is None:
                # Nothing has reached the client: a garbled answer fails over like a broken one.
                raise UpstreamError(backend_id, f"sent a reply that is not a JSON object: {body[:80]!r}")
            learner.final(final)
        return Reply(status, record, Framing.RAW, headers, body=body)
    first = await upstream.readany()
    framing = Framing.SSE if upstream.is_sse else Framing.NDJSON
    ending = _Ending(operation, dialect, upstream, backend_id, learner) if status == 200 else None
    relayed = _Relayed(upstream, first, ending, learner)
    return Reply(status, record, framing, headers, stream=relayed.pieces(), pipe=relayed.pipe)


class _Relayed:
    """A stream relayed as it came, read piece by piece (`pieces`) or piped to a front's sink (`pipe`);
    either way its tail is kept for the ending's judgement and a failure ends it as its last piece."""

    __slots__ = ("_ending", "_first", "_learner", "_upstream")

    def __init__(self, upstream: UpstreamReply, first: bytes, ending: _Ending | None, learner: Learner) -> None:
        self._upstream, self._first, self._ending, self._learner = upstream, first, ending, learner

    async def pieces(self) -> AsyncGenerator[Piece, None]:
        tail, chunk = LastLine(), self._first
        while chunk:
            tail.feed(chunk)
            yield chunk
            try:
                chunk = await self._upstream.readany()
            except UpstreamError as exc:
                yield self._broken(exc, tail)
                return
        failure = self._ended(tail)
        if failure is not None:
            yield failure

    async def pipe(self, sink: Sink) -> StreamFailure | None:
        tail, first = LastLine(forward=sink.write), self._first
        if first:
            if not tail.feed(first):
                await sink.drain()
            try:
                await self._upstream.pipe(tail.feed, sink.drain)
            except UpstreamError as exc:
                return self._broken(exc, tail)
        return self._ended(tail)

    def _broken(self, exc: UpstreamError, tail: LastLine) -> StreamFailure:
        self._learner.failed(str(exc), exc)
        return StreamFailure(str(exc), open_line=not tail.ends_line)

    def _ended(self, tail: LastLine) -> StreamFailure | None:
        failure = self._ending.judge(tail) if self._ending is not None else None
        return None if failure is None else StreamFailure(failure, open_line=not tail.ends_line)


class _Ending:
    """Did a stream that ended cleanly really finish? Reports the final line or the failure."""

    __slots__ = ("_backend_id", "_dialect", "_learner", "_operation", "_upstream")

    def __init__(self, operation: Operation, dialect: Dialect, upstream: UpstreamReply, backend_id: str,
                 learner: Learner) -> None:
        self._operation, self._dialect, self._upstream = operation, dialect, upstream
        self._backend_id, self._learner = backend_id, learner

    def judge(self, tail: LastLine) -> str | None:
        last = tail.line()
        if self._dialect is Dialect.OLLAMA and self._operation.ends_with_done_line and tail.chunks_seen:
            final = json_object(last) if _DONE in last.replace(b" ", b"") else None
            self._learner.final(final)
            if final is None and b'"error"' not in last and not tail.overflowed:
                return self._failed(f"backend {self._backend_id!r} ended the stream without a final done line")
        elif (self._dialect is Dialect.OPENAI and self._operation in (Operation.CHAT, Operation.COMPLETION)
              and self._upstream.is_sse and last.strip() != b"data: [DONE]" and b'"error"' not in last):
            # llama.cpp answers an over-long streamed prompt with an empty 200 stream, then resets
            # the connection: say so, and keep that connection out of the pool. An empty stream is
            # the request's fault (too long), not the backend's.
            self._upstream.forget_connection()
            if not tail.chunks_seen:
                self._learner.failed(EMPTY_STREAM, None)
                return EMPTY_STREAM
            return self._failed(f"backend {self._backend_id!r} ended the stream without data: [DONE]")
        return None

    def _failed(self, reason: str) -> str:
        self._learner.failed(reason, UpstreamError(self._backend_id, reason))
        return reason


async def _whole_or_error_body(upstream: UpstreamReply) -> bytes:
    return await (upstream.read_error_body() if upstream.status >= 400 else upstream.read(WHOLE_REPLY_LIMIT))


async def translated(upstream: UpstreamReply, translation: Translation, *, backend_id: str, record: CallRecord,
                     learner: Learner) -> Reply:
    """An Ollama backend's native reply, in the protocol the client spoke (OpenAI, Responses, Anthropic)."""
    translator = translation.translator(rng=_rng, now=time.time())
    if upstream.status >= 400 or not translation.stream:
        payload = json_object(await _whole_or_error_body(upstream))
        if upstream.status >= 400:
            status, error = translator.error(upstream.status, payload)
            return Reply(status, record, Framing.JSON, body=error)
        if payload is None:
            raise UpstreamError(backend_id, "sent a reply that is not a JSON object")
        learner.final(payload)
        return Reply(200, record, Framing.JSON, body=translator.whole(payload))
    first = await upstream.readany()
    return Reply(200, record, Framing.SSE, stream=_translated_events(upstream, first, translator, backend_id, learner))


async def _translated_events(upstream: UpstreamReply, chunk: bytes, translator: ReplyTranslator, backend_id: str,
                             learner: Learner) -> AsyncGenerator[Piece, None]:
    splitter = LineSplitter()
    final: dict[str, Any] | None = None
    while True:  # until the translator finishes (a done line, an error) or the upstream ends
        failure: str | None = None
        try:
            lines = splitter.feed(chunk) if chunk else splitter.flush()
        except LineTooLong as exc:
            lines, failure = [], f"backend {backend_id!r} sent {exc}"
        for line in lines:
            native = json_object(line)
            if native is None:
                failure = f"backend {backend_id!r} sent a line that is not JSON: {line[:80]!r}"
                break
            if "error" in native:
                learner.failed(str(native["error"]), None)
            elif native.get("done"):
                final = native
            for event in translator.feed(native):
                yield event
        if failure is None and not chunk and not translator.finished:
            failure = UNFINISHED_STREAM
        if failure is not None:
            learner.failed(failure, None)
            for event in translator.abort(failure, 502):
                yield event
            break
        if translator.finished:
            break
        try:
            chunk = await upstream.readany()
        except UpstreamError as exc:
            learner.failed(str(exc), exc)
            for event in translator.abort(str(exc), 502):
                yield event
            break
    learner.final(final)


async def translated_via_openai(upstream: UpstreamReply, context: NativeReplyContext, translation: Translation, *,
                                backend_id: str, record: CallRecord, learner: Learner) -> Reply:
    """An OpenAI-type backend's chat completion, for a client that spoke another protocol (Responses,
    Anthropic): made native first (`native_from_openai`), then translated like an Ollama backend's."""
    native = await native_from_openai(upstream, context, backend_id=backend_id, record=record, learner=learner)
    translator = translation.translator(rng=_rng, now=time.time())
    if native.stream is None:
        body = native.body if isinstance(native.body, dict) else {}
        if native.status >= 400:
            status, error = translator.error(native.status, body)
            return Reply(status, record, Framing.JSON, body=error)
        return Reply(native.status, record, Framing.JSON, body=translator.whole(body))
    return Reply(200, record, Framing.SSE, stream=_retranslated(native.stream, translator))


async def _retranslated(lines: AsyncGenerator[Piece, None], translator: ReplyTranslator
                        ) -> AsyncGenerator[Piece, None]:
    try:
        async for line in lines:
            events = translator.feed(line) if isinstance(line, dict) else []
            for event in events:
                yield event
            if translator.finished:
                return
        for event in translator.abort(UNFINISHED_STREAM, 502):
            yield event
    finally:
        await lines.aclose()


async def native_from_openai(upstream: UpstreamReply, context: NativeReplyContext, *, backend_id: str,
                             record: CallRecord, learner: Learner) -> Reply:
    """An OpenAI-type backend's reply, as the native Ollama response the client asked for."""
    started = time.time()
    if upstream.status >= 400 or not context.stream:
        payload = json_object(await _whole_or_error_body(upstream))
        if upstream.status >= 400:
            status, error = native_error(upstream.status, payload)
            return Reply(status, record, Framing.JSON, body=error)
        try:
            reply = native_reply(payload or {}, context, started=started, now=time.time())
        except BackendReplyError as exc:
            return Reply(502, record, Framing.JSON, body={"error": f"backend {backend_id!r}: {exc}"})
        learner.final(reply)
        return Reply(200, record, Framing.JSON, body=reply)
    first = await upstream.readany()
    translator = NativeStreamTranslator(context, started=started)
    return Reply(200, record, Framing.NDJSON,
                 stream=_native_lines(upstream, first, translator, backend_id, learner))


async def _native_lines(upstream: UpstreamReply, chunk: bytes, translator: NativeStreamTranslator,
                        backend_id: str, learner: Learner) -> AsyncGenerator[Piece, None]:
    decoder = SseDecoder()
    final: dict[str, Any] | None = None
    while not translator.finished:
        now = time.time()
        try:
            lines = [line for event in (decoder.feed(chunk) if chunk else decoder.flush())
                     for line in translator.feed(event, now)]
        except LineTooLong as exc:
            reason = f"backend {backend_id!r} sent {exc}"
            learner.failed(reason, None)
            yield translator.abort(reason)
            break
        if not chunk:
            # llama.cpp answers an over-long streamed prompt with an empty 200 stream: close()
            # turns "no finish at all" into an error line.
            ending = translator.close(now)
            if ending and "error" in ending[-1]:
                upstream.forget_connection()
                learner.failed(str(ending[-1]["error"]), None)
            lines += ending
        for line in lines:
            if line.get("done"):
                final = line
            yield line
        if not chunk or translator.finished:
            break
        try:
            chunk = await upstream.readany()
        except UpstreamError as exc:
            learner.failed(str(exc), exc)
            yield translator.abort(str(exc))
            break
    learner.final(final)
