from __future__ import annotations

import orjson
import pytest

from ollama_proxy.core.streams import TAIL_LIMIT, LastLine, LineSplitter, LineTooLong

STREAM = b'{"a":1}\n{"b":2}\n{"done":true,"context":[1,2,3,4,5,6]}\n'


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16, len(STREAM)])
def test_last_line_survives_any_chunking(size: int) -> None:
    tail = LastLine()
    for i in range(0, len(STREAM), size):
        tail.feed(STREAM[i:i + size])
    assert tail.line() == b'{"done":true,"context":[1,2,3,4,5,6]}'


def test_last_line_without_trailing_newline() -> None:
    tail = LastLine()
    tail.feed(b'{"a":1}\n{"b"')
    tail.feed(b':2}')
    assert tail.line() == b'{"b":2}'


def test_last_line_of_nothing_is_empty() -> None:
    assert LastLine().line() == b""


def test_last_line_keeps_only_the_tail() -> None:
    tail = LastLine()
    for _ in range(1000):
        tail.feed(b'{"x":1}\n{"y":2}\n')
    assert len(tail._chunks) == 1


@pytest.mark.parametrize("size", [1, 5, len(STREAM)])
def test_line_splitter_rebuilds_lines(size: int) -> None:
    splitter = LineSplitter()
    lines = []
    for i in range(0, len(STREAM), size):
        lines += splitter.feed(STREAM[i:i + size])
    lines += splitter.flush()
    assert lines == STREAM.strip().split(b"\n")


def test_one_line_per_chunk_keeps_only_the_last_line() -> None:
    # Ollama writes one line per chunk, each ending in a newline: the kept tail must not grow.
    tail = LastLine()
    for i in range(10_000):
        tail.feed(b'{"response":"%d"}\n' % i)
    assert tail.line() == b'{"response":"9999"}'
    assert len(tail._chunks) == 1


def test_a_long_line_is_kept_in_bounded_memory() -> None:
    tail = LastLine()
    tail.feed(b'{"a":1}\n')
    for _ in range(4000):  # a 48 MB line in 12 KB chunks
        tail.feed(b"x" * 12_000)
        assert tail._size <= TAIL_LIMIT + 12_000
    assert tail.overflowed
    assert tail.line().startswith(b"xxx")
    assert len(tail.line()) <= TAIL_LIMIT


def test_a_long_final_line_keeps_its_metrics_without_the_context_array() -> None:
    context = b",".join(b"%d" % (i % 128000) for i in range(200_000))
    final = (b'{"model":"m","response":"","done":true,"done_reason":"stop","context":[' + context
             + b'],"total_duration":5,"prompt_eval_count":200000,"eval_count":3}\n')
    tail = LastLine()
    tail.feed(b'{"response":"hi","done":false}\n')
    for i in range(0, len(final), 65536):
        tail.feed(final[i:i + 65536])
    assert orjson.loads(tail.line()) == {"model": "m", "response": "", "done": True, "done_reason": "stop",
                                          "total_duration": 5, "prompt_eval_count": 200000, "eval_count": 3}


def test_short_lines_after_long_finished_ones_are_not_cut() -> None:
    tail = LastLine()
    tail.feed(b"y" * (TAIL_LIMIT * 2) + b'\n{"done":true}\n')
    assert not tail.overflowed
    assert tail.line() == b'{"done":true}'


def test_ends_line_tells_whether_a_line_is_open() -> None:
    tail = LastLine()
    assert tail.ends_line
    tail.feed(b'{"a":1}\n{"par')
    assert not tail.ends_line
    tail.feed(b'tial":2}\n')
    assert tail.ends_line


def test_line_splitter_refuses_a_line_over_its_limit() -> None:
    splitter = LineSplitter(limit=100)
    assert splitter.feed(b'{"a":1}\n' + b"x" * 60) == [b'{"a":1}']
    with pytest.raises(LineTooLong):
        splitter.feed(b"x" * 60)


def test_line_splitter_joins_a_line_split_over_many_chunks() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b'{"a":') == []
    assert splitter.feed(b'"b"') == []
    assert splitter.feed(b'}\n{"c"') == [b'{"a":"b"}']
    assert splitter.flush() == [b'{"c"']


def test_a_forwarding_tail_hands_on_every_chunk_and_what_its_receiver_says() -> None:
    """A piped stream's tail: each chunk is noted, then passed on; the receiver's answer is the tail's."""
    got: list[bytes] = []
    tail = LastLine(forward=lambda chunk: got.append(chunk) is None and len(got) < 2)
    assert tail.feed(b'{"a": 1}\n') is True
    assert tail.feed(b'{"done": ') is False  # the receiver is full after its second chunk
    assert tail.feed(b"true}\n") is False
    assert got == [b'{"a": 1}\n', b'{"done": ', b"true}\n"]
    assert tail.line() == b'{"done": true}' and tail.ends_line
