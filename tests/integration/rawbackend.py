"""A tiny fake Ollama on a raw socket, for wire faults the simulator cannot produce.

It answers the control plane (`/`, `/api/version`, `/api/tags`, `/api/ps`, `/api/show`) like a healthy
Ollama that has `llama3.2`, so the proxy's health checks and model discovery accept it. What it does
with `POST /api/generate` and `/api/chat` depends on `mode`, which a test may change at any time:

    normal                       a valid NDJSON stream (chunked), or one JSON reply when "stream": false
    short_body                   Content-Length larger than the bytes sent, then a clean close
    reset_mid_body               headers and part of the body, then a TCP reset (SO_LINGER 0)
    hang_before_headers          read the request, answer nothing, keep the socket open
    half_line                    a 200 NDJSON stream: one line, then half a line, then close
    stall_mid_stream             a 200 NDJSON stream: one line, then silence, socket open
    huge_line                    a 200 NDJSON stream whose first line is ~48 MB, then the final line
    server_error_invalid_option  Ollama's 500 for an option of the wrong JSON type

`received` counts the inference requests per path (control-plane calls are not counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson

MODES = ("normal", "short_body", "reset_mid_body", "hang_before_headers", "half_line", "stall_mid_stream",
         "huge_line", "server_error_invalid_option")
INFERENCE_PATHS = ("/api/generate", "/api/chat")
MODEL = "llama3.2:latest"
INVALID_OPTION_ERROR = 'option "stop" must be of type array'
HUGE_SIZE = 48_000_000
_BLOCK = b"a" * (1 << 20)
_CREATED = "2024-01-01T00:00:00Z"

_CONTROL: dict[tuple[str, str], Any] = {
    ("GET", "/api/version"): {"version": "0.12.0"},
    ("GET", "/api/tags"): {"models": [{"name": MODEL, "model": MODEL, "digest": "abc", "size": 1, "details": {}}]},
    ("GET", "/api/ps"): {"models": []},
    ("POST", "/api/show"): {"model_info": {"general.architecture": "llama", "general.context_length": 131072},
                            "details": {"family": "llama", "parameter_size": "3.2B",
                                        "quantization_level": "Q4_K_M"},
                            "capabilities": ["completion"]},
}


def _line(path: str, text: str, *, done: bool = False) -> dict[str, Any]:
    """One generate or chat object; the final one carries the metrics the proxy learns from."""
    out: dict[str, Any] = {"model": MODEL, "created_at": _CREATED}
    if path == "/api/chat":
        out["message"] = {"role": "assistant", "content": text}
    else:
        out["response"] = text
    out["done"] = done
    if done:
        out.update(done_reason="stop", total_duration=1_000_000, load_duration=1000, prompt_eval_count=3,
                   prompt_eval_duration=1000, eval_count=2, eval_duration=1000)
    return out


def stream_lines(path: str) -> list[bytes]:
    """The NDJSON lines of a normal stream, each with its newline."""
    return [orjson.dumps(obj) + b"\n" for obj in (_line(path, "Hello"), _line(path, " world"),
                                                  _line(path, "", done=True))]


def whole_reply(path: str) -> bytes:
    """The non-streamed reply: one JSON object."""
    final = _line(path, "Hello world", done=True)
    return orjson.dumps(final)


def huge_stream_pieces() -> Iterator[bytes]:
    """The `huge_line` generate stream, piece by piece: the whole first line is ~48 MB of 'a's.

    Tests hash the same pieces to know what the client must receive, without holding 48 MB.
    """
    yield b'{"model":"' + MODEL.encode() + b'","created_at":"' + _CREATED.encode() + b'","response":"'
    view = memoryview(_BLOCK)
    for start in range(0, HUGE_SIZE, len(_BLOCK)):
        yield view[:min(len(_BLOCK), HUGE_SIZE - start)]
    yield b'","done":false}\n'
    yield orjson.dumps(_line("/api/generate", "", done=True)) + b"\n"


def _head(status: int, content_type: str, *, length: int | None = None) -> bytes:
    """Status line and headers: with a Content-Length, or chunked when `length` is None."""
    reason = {200: "OK", 404: "Not Found", 500: "Internal Server Error"}[status]
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n{framing}\r\n"
            f"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n").encode()


def _chunk(data: bytes | memoryview) -> list[bytes | memoryview]:
    return [b"%x\r\n" % len(data), data, b"\r\n"]


_NDJSON = "application/x-ndjson"
_JSON = "application/json; charset=utf-8"


class RawBackend:
    """`async with RawBackend() as backend:` serves on `backend.url` until the block ends."""

    def __init__(self, mode: str = "normal") -> None:
        self.mode = mode
        self.received: Counter[str] = Counter()
        self.bodies: list[dict[str, Any]] = []  # the inference request bodies, in order
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        self._mode = mode

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    @property
    def inference_requests(self) -> int:
        return sum(self.received.values())

    async def __aenter__(self) -> RawBackend:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()  # wakes the handlers that hang: their read sees the end
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            while (request := await _read_request(reader)) is not None:
                if not await self._respond(*request, reader, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            if not writer.transport.is_closing():
                writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._handlers.discard(task)

    async def _respond(self, method: str, path: str, body: bytes, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> bool:
        """Answer one request; returns whether the connection stays open for the next."""
        if path == "/" and method in ("GET", "HEAD"):
            text = b"Ollama is running"
            writer.write(_head(200, "text/plain; charset=utf-8", length=len(text)) + (b"" if method == "HEAD"
                                                                                       else text))
        elif (method, path) in _CONTROL:
            payload = orjson.dumps(_CONTROL[method, path])
            writer.write(_head(200, _JSON, length=len(payload)) + payload)
        elif method == "POST" and path in INFERENCE_PATHS:
            self.received[path] += 1
            request = orjson.loads(body) if body else {}
            self.bodies.append(request)
            return await self._infer(path, request.get("stream", True) is not False, reader, writer)
        else:
            writer.write(_head(404, "text/plain", length=18) + b"404 page not found")
        await writer.drain()
        return True

    async def _infer(self, path: str, stream: bool, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> bool:
        mode = self.mode
        lines = stream_lines(path)
        whole = b"".join(lines) if stream else whole_reply(path)
        content_type = _NDJSON if stream else _JSON
        if mode == "normal":
            if stream:
                await _send(writer, _head(200, _NDJSON), *(p for line in lines for p in _chunk(line)), b"0\r\n\r\n")
            else:
                await _send(writer, _head(200, _JSON, length=len(whole)), whole)
            return True
        if mode == "server_error_invalid_option":
            payload = orjson.dumps({"error": INVALID_OPTION_ERROR})
            await _send(writer, _head(500, _JSON, length=len(payload)), payload)
            return True
        if mode == "huge_line":
            await _send(writer, _head(200, _NDJSON))
            for piece in huge_stream_pieces():
                await _send(writer, *_chunk(piece))
            await _send(writer, b"0\r\n\r\n")
            return True
        if mode in ("short_body", "reset_mid_body"):
            await _send(writer, _head(200, content_type, length=len(whole)), whole[:len(whole) // 2])
            if mode == "reset_mid_body":
                await asyncio.sleep(0.2)  # let the proxy read the head and the partial body first
                _reset(writer)
            return False
        if mode == "half_line":
            await _send(writer, _head(200, _NDJSON), *_chunk(lines[0]), *_chunk(lines[1][:len(lines[1]) // 2]))
            return False
        if mode == "stall_mid_stream":
            await _send(writer, _head(200, _NDJSON), *_chunk(lines[0]))
        # hang_before_headers, and stall_mid_stream once its line is out: silence until the peer
        # hangs up or the backend is closed.
        await reader.read()
        return False


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes] | None:
    """Method, path and body of the next request, or None when the client closed the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, target, _version = request_line.split(" ", 2)
    headers = {name.strip().lower(): value.strip()
               for name, _, value in (line.partition(":") for line in header_lines if line)}
    if "chunked" in headers.get("transfer-encoding", ""):
        raise NotImplementedError("chunked request bodies: the proxy sends bodies with a Content-Length")
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return method, target.split("?", 1)[0], body


async def _send(writer: asyncio.StreamWriter, *parts: bytes | memoryview) -> None:
    writer.writelines(parts)
    await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Abort the connection with a TCP RST, as a crashing server does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
