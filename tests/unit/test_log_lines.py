"""The log handler: lines logged on the event loop's thread in one turn of the loop go out in one write,
in order; lines from other threads, or while no loop runs, at once; nothing waits past a flush."""

from __future__ import annotations

import asyncio
import io
import logging
import threading

import pytest

from ollama_proxy.logs import LineHandler, TextFormatter


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
