"""The log handler: lines logged on the event loop's thread in one turn of the loop go out in one write,
in order; lines from other threads, or while no loop runs, at once; nothing waits past a flush."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import Iterator

import orjson
import pytest

from ollama_proxy.logs import InfoLines, JsonFormatter, LineHandler, TextFormatter


class Stream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


@pytest.fixture
def logged() -> tuple[logging.Logger, LineHandler, Stream]:
    stream = Stream()
    handler = LineHandler()
    handler.setStream(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("test_log_lines")
    logger.handlers, logger.propagate, logger.level = [handler], False, logging.INFO
    return logger, handler, stream


async def test_a_burst_on_the_loop_is_one_write_after_the_turn(
        logged: tuple[logging.Logger, LineHandler, Stream]) -> None:
    logger, handler, stream = logged
    handler.attach(asyncio.get_running_loop())
    for i in range(3):
        logger.info("request %d", i)
    assert stream.writes == []  # not yet: at the end of this turn of the loop
    await asyncio.sleep(0)
    assert stream.writes == ["request 0\nrequest 1\nrequest 2\n"]


async def test_another_thread_writes_at_once_and_after_what_waits(
        logged: tuple[logging.Logger, LineHandler, Stream]) -> None:
    logger, handler, stream = logged
    handler.attach(asyncio.get_running_loop())
    logger.info("on the loop")
    thread = threading.Thread(target=logger.info, args=("from a thread",))
    thread.start()
    thread.join()
    assert stream.getvalue() == "on the loop\nfrom a thread\n"


def test_without_a_loop_every_line_goes_at_once(logged: tuple[logging.Logger, LineHandler, Stream]) -> None:
    logger, _, stream = logged
    logger.info("one")
    logger.info("two")
    assert stream.writes == ["one\n", "two\n"]


def test_a_stopped_loop_leaves_nothing_behind(logged: tuple[logging.Logger, LineHandler, Stream]) -> None:
    logger, handler, stream = logged
    loop = asyncio.new_event_loop()
    handler.attach(loop)

    def log_and_stop() -> None:
        logger.info("last on the loop")
        loop.stop()  # before the handler's turn at the end of this one

    loop.call_soon(log_and_stop)
    loop.run_forever()
    logger.info("after the loop")  # the loop no longer runs: at once, after what waited
    loop.close()
    handler.flush()
    assert stream.getvalue() == "last on the loop\nafter the loop\n"


def test_detaching_writes_what_waits(logged: tuple[logging.Logger, LineHandler, Stream]) -> None:
    logger, handler, stream = logged
    loop = asyncio.new_event_loop()
    handler.attach(loop)
    loop.call_soon(lambda: (logger.info("waiting"), handler.attach(None), loop.stop()))
    loop.run_forever()
    loop.close()
    assert stream.getvalue() == "waiting\n"


def test_the_text_format_matches_the_standard_formatter() -> None:
    record = logging.makeLogRecord({"name": "ollama_proxy.access", "levelno": 20, "levelname": "INFO",
                                    "msg": "hello %s", "args": ("there",)})
    for created in (1_700_000_000.0004, 1_700_000_000.9996, 1_700_000_001.5):
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert TextFormatter().format(record) == logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s").format(record)


@pytest.fixture
def root_handler() -> Iterator[tuple[LineHandler, Stream]]:
    """A LineHandler for the root logger, as `configure_logging` sets it; the root restored afterwards."""
    root, stream, handler = logging.getLogger(), Stream(), LineHandler()
    handler.setStream(stream)
    saved = root.handlers, root.level
    try:
        yield handler, stream
    finally:
        root.handlers, root.level = saved


def only_handler(handler: LineHandler) -> list[logging.LogRecord]:
    """Make `handler` the root's only one (pytest adds its capture to the root as each test starts);
    the records it is handed through `logging` are listed."""
    root = logging.getLogger()
    root.handlers, root.level = [handler], logging.INFO
    records: list[logging.LogRecord] = []
    emit = handler.emit
    handler.emit = lambda record: (records.append(record), emit(record))[1]  # type: ignore[method-assign]
    return records


@pytest.mark.parametrize("formatter", [TextFormatter, JsonFormatter], ids=["text", "json"])
def test_info_lines_write_what_the_logger_writes(root_handler: tuple[LineHandler, Stream],
                                                 formatter: type[logging.Formatter]) -> None:
    handler, stream = root_handler
    handler.setFormatter(formatter())
    records = only_handler(handler)
    logger = logging.getLogger("info_lines.access")
    fields = {"backend": "gpu", "status": 200}
    logger.info("%s", "one request", extra={"fields": fields})
    InfoLines(logger).info("one request", fields)
    through_logging, direct = stream.writes
    assert len(records) == 1  # the second line came without a LogRecord
    # The two were written a moment apart: all but the time is the same.
    if formatter is JsonFormatter:
        a, b = orjson.loads(through_logging), orjson.loads(direct)
        assert len(a.pop("time")) == len(b.pop("time")) == len("2026-12-03T14:41:04.613Z")
        assert a == b == {"level": "INFO", "logger": "info_lines.access", "message": "one request", **fields}
    else:
        assert len(direct.split(" ", 2)[1]) == len(through_logging.split(" ", 2)[1]) == len("14:41:04,613")
        assert through_logging.split(" ", 2)[2] == direct.split(" ", 2)[2] == "INFO info_lines.access: one request\n"


def test_info_lines_go_through_logging_when_anything_else_listens(root_handler: tuple[LineHandler, Stream]) -> None:
    handler, stream = root_handler
    handler.setFormatter(TextFormatter())
    records = only_handler(handler)
    logger = logging.getLogger("info_lines.captured")
    captured: list[logging.LogRecord] = []
    listener = logging.Handler()
    listener.emit = captured.append  # type: ignore[method-assign]
    logger.addHandler(listener)
    try:
        InfoLines(logger).info("seen by both", {"backend": "gpu"})
    finally:
        logger.removeHandler(listener)
    assert [r.getMessage() for r in captured] == ["seen by both"] and captured[0].fields == {"backend": "gpu"}
    assert stream.getvalue().endswith("INFO info_lines.captured: seen by both\n") and len(records) == 1
    logger.setLevel(logging.WARNING)
    try:
        InfoLines(logger).info("below the level", None)
    finally:
        logger.setLevel(logging.NOTSET)
    assert "below the level" not in stream.getvalue()
