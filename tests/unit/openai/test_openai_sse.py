from __future__ import annotations

import pytest

from ollama_proxy.core.openai.sse import DONE_EVENT, SseDecoder, SseEvent, encode_event

# One stream exercising every rule: CRLF, CR and LF line ends, a comment, multi-line data,
# an event name and id, a field without a space, a non-ASCII character, and [DONE].
STREAM = (
    b": keep-alive comment\r\n\r\n"
    b"data: {\"a\": 1}\r\n\r\n"
    b"event: delta\nid: 7\ndata: first line\ndata: second line\n\n"
    b"data:no-space\r\r"
    + "data: caf\u00e9 \u2603\n\n".encode()
    + b"data: [DONE]\n\n"
)
EXPECTED = [
    SseEvent(data='{"a": 1}'),
    SseEvent(data="first line\nsecond line", event="delta", id="7"),
    SseEvent(data="no-space", id="7"),
    SseEvent(data="caf\u00e9 \u2603", id="7"),
    SseEvent(data="[DONE]", id="7"),
]


def _decode(chunks: list[bytes]) -> list[SseEvent]:
    decoder = SseDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.flush()


def test_whole_stream_in_one_chunk() -> None:
    assert _decode([STREAM]) == EXPECTED


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_split_at_every_byte_offset(cut: int) -> None:
    assert _decode([STREAM[:cut], STREAM[cut:]]) == EXPECTED


def test_one_byte_at_a_time() -> None:
    assert _decode([STREAM[i:i + 1] for i in range(len(STREAM))]) == EXPECTED


@pytest.mark.parametrize("first,second", [
    pytest.param(b"data: x\r", b"\ndata: y\r\n\r\n", id="crlf-split-inside-pair"),
    pytest.param(b"data: x\r", b"\r", id="cr-then-cr-is-blank-line"),
])
def test_carriage_return_at_chunk_end(first: bytes, second: bytes) -> None:
    decoder = SseDecoder()
    events = decoder.feed(first) + decoder.feed(second) + decoder.flush()
    assert [e.data for e in events] == (["x\ny"] if b"y" in second else ["x"])


def test_flush_returns_an_event_left_open_at_eof() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: [DONE]") == []
    assert decoder.flush() == [SseEvent(data="[DONE]")]
    assert decoder.flush() == []


def test_event_without_data_is_not_dispatched() -> None:
    assert _decode([b"event: ping\n\n: only a comment\n\n"]) == []


def test_done_and_json_helpers() -> None:
    assert SseEvent(data="[DONE]").is_done
    assert not SseEvent(data='{"x":1}').is_done
    assert SseEvent(data='{"x":1}').json() == {"x": 1}


def test_encode_round_trips_through_decoder() -> None:
    payload = {"text": "line one\nline two", "n": 1}
    raw = encode_event(payload) + DONE_EVENT
    assert raw.count(b"\n\n") == 2
    events = _decode([raw])
    assert events[0].json() == payload
    assert events[1].is_done
