from __future__ import annotations

import pytest

from ollama_proxy.core.streams import LastLine, LineSplitter

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
