"""How the proxy writes its log: plain lines for people, or one JSON object per line for log collectors
(`--log-format json`, `server.log_format`). A record may carry `fields` (the access log's model, backend,
num_ctx, ...): the text form has them in its message already, the JSON form adds them as keys.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, TextIO

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """`TEXT_FORMAT`, the date and time down to the second formatted once per second: the access log
    writes a line per request, and `time.strftime` is a good part of a line's cost."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._second: int | None = None
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime(self.default_time_format, self.converter(second))
        return f"{self._stamp},{int(record.msecs):03d}"


class LineHandler(logging.StreamHandler[TextIO]):
    """Standard error, one line per record; while an event loop is attached (`batch_lines`), the lines
    logged on its thread go out together once per turn of the loop: one write for a burst of access
    lines rather than one each. Lines from other threads, and any line while no loop runs, go at once."""

    def __init__(self) -> None:
        super().__init__()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._pending: list[str] = []

    def attach(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.flush()
        self._loop, self._thread = loop, threading.get_ident() if loop is not None else None

    def emit(self, record: logging.LogRecord) -> None:
        loop = self._loop
        if loop is None or self._thread != threading.get_ident() or not loop.is_running():
            self.flush()  # what waits goes first: the lines stay in order
            super().emit(record)
            return
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if not self._pending:
            loop.call_soon(self.flush)
        self._pending.append(line + self.terminator)

    def flush(self) -> None:
        self.acquire()
        try:
            if self._pending:
                text, self._pending = "".join(self._pending), []
                try:
                    self.stream.write(text)
                except Exception:  # reported on standard error, as StreamHandler.emit does; the proxy goes on
                    self.handleError(logging.makeLogRecord({"msg": text}))
            super().flush()
        finally:
            self.release()


def batch_lines(loop: asyncio.AbstractEventLoop | None) -> None:
    """Attach `loop` to the proxy's log handler (None: detach, writing what waits)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, LineHandler):
            handler.attach(loop)


def configure_logging(level: str, log_format: str = "text") -> None:
    # Neither format shows the caller's file and line, thread or process: not worked out per record
    # (the logging HOWTO's "Optimization"; finding the caller walks the stack). For the whole process:
    # `%(filename)s`, `%(lineno)d`, `stack_info` and `stacklevel` say nothing from here on.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = LineHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=getattr(logging, level), handlers=[handler], force=True)
