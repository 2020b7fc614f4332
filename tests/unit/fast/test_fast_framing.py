"""The fast front's framing decisions: which requests it serves itself, and the bytes of what it writes."""

from __future__ import annotations

import pytest

from ollama_proxy.adapters.fast import framing


@pytest.mark.parametrize(("target", "upgrade", "served"), [
    (b"/api/chat", False, True),
    (b"/api/generate?x=1", False, True),
    (b"/v1/chat/completions", False, True),
    (b"/v1/messages", False, True),
    (b"/proxy-context/auto/api/generate", False, True),
    (b"/", False, True),
    (b"/api", False, True),
    (b"/api/chat", True, False),  # any upgrade is aiohttp's
    (b"/v1/stream/ws", False, False),  # the WebSocket path, upgrade or not
    (b"/health", False, False),
    (b"/metrics", False, False),
    (b"/ui/status.js", False, False),
    (b"/status", False, False),
    (b"/admin/reload", False, False),
    (b"/apix", False, False),
    (b"/api/tags%2F..", False, False),  # escapes are decoded by aiohttp's router: left to it
    (b"/api/chat#frag", False, False),
    (b"http://evil.example/api/chat", False, False),  # absolute-form: aiohttp refuses it in JSON
    (b"*", False, False),
])
def test_which_requests_the_fast_front_serves(target: bytes, upgrade: bool, served: bool) -> None:
    assert framing.serves(target, upgrade) is served


def test_target_splits_into_path_and_query() -> None:
    assert framing.split_target(b"/api/tags?a=1&b=2") == ("/api/tags", "a=1&b=2")
    assert framing.split_target(b"/api/tags?") == ("/api/tags", None)
    assert framing.split_target(b"/api/tags") == ("/api/tags", None)


def test_a_head_with_a_length_keeps_the_connection_open_when_asked() -> None:
    head = framing.head(200, b"X-A: 1\r\n", length=5, keep_alive=True, date=b"Date: d\r\n")
    assert head == b"HTTP/1.1 200 OK\r\nDate: d\r\nX-A: 1\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n"


def test_a_head_of_unknown_length_is_chunked_or_ends_with_the_connection() -> None:
    chunked = framing.head(200, b"", length=None, keep_alive=True, date=b"")
    assert b"Transfer-Encoding: chunked\r\n" in chunked and b"Connection: keep-alive" in chunked
    http10 = framing.head(200, b"", length=None, keep_alive=True, date=b"", chunked=False)
    assert b"Transfer-Encoding" not in http10 and b"Content-Length" not in http10
    assert b"Connection: close\r\n" in http10  # the close is what ends the body


@pytest.mark.parametrize("status", [204, 304])
def test_bodyless_statuses_carry_no_framing(status: int) -> None:
    head = framing.head(status, b"", length=0, keep_alive=True, date=b"")
    assert b"Content-Length" not in head and b"Transfer-Encoding" not in head
    assert not framing.has_body(status, "GET")


def test_head_requests_get_no_body() -> None:
    assert not framing.has_body(200, "HEAD")
    assert framing.has_body(200, "GET")


def test_status_lines_name_the_reason_and_survive_unknown_codes() -> None:
    assert framing.status_line(413) == b"HTTP/1.1 413 Request Entity Too Large\r\n"
    assert framing.status_line(599) == b"HTTP/1.1 599 Unknown\r\n"


def test_chunks_are_hex_length_framed() -> None:
    assert framing.chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"


def test_header_lines_keep_undecodable_bytes_and_drop_lines_that_would_break_framing() -> None:
    raw = b"k\xff".decode("utf-8", "surrogateescape")
    lines = framing.header_lines([("X-Key", raw), ("X-Evil", "a\r\nSet-Cookie: b"), ("X-Ok", "é")])
    assert lines == b"X-Key: k\xff\r\nX-Ok: " + "é".encode() + b"\r\n"


def test_the_date_line_is_an_http_date() -> None:
    date = framing.DateLine()
    line = date()
    assert line.startswith(b"Date: ") and line.endswith(b" GMT\r\n")
