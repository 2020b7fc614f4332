"""How the proxy writes its log: plain lines for people, or one JSON object per line for log collectors
(`--log-format json`, `server.log_format`). A record may carry `fields` (the access log's model, backend,
num_ctx, ...): the text form has them in its message already, the JSON form adds them as keys.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, TextIO, cast

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LineFormatter(logging.Formatter):
    """A formatter that can also write a line from its parts, with no `LogRecord` (`InfoLines`)."""

    def line(self, created: float, level: str, name: str, message: str, fields: dict[str, Any] | None) -> str:
        raise NotImplementedError


class JsonFormatter(LineFormatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        return self.line(record.created, record.levelname, record.name, record.getMessage(),
                         fields if isinstance(fields, dict) else None,
                         self.formatException(record.exc_info) if record.exc_info else None)

    def line(self, created: float, level: str, name: str, message: str, fields: dict[str, Any] | None,
             traceback: str | None = None) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{_msecs(created):03d}Z",
            "level": level,
            "logger": name,
            "message": message,
        }
        if fields:
            entry.update(fields)
        if traceback:
            entry["traceback"] = traceback
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(LineFormatter):
    """`TEXT_FORMAT`, the date and time down to the second formatted once per second: the access log
    writes a line per request, and `time.strftime` is a good part of a line's cost."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._second: int | None = None
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self._time(record.created, int(record.msecs))

    def line(self, created: float, level: str, name: str, message: str, fields: dict[str, Any] | None) -> str:
        return f"{self._time(created, _msecs(created))} {level} {name}: {message}"  # TEXT_FORMAT's fields

    def _time(self, created: float, msecs: int) -> str:
        second = int(created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime(self.default_time_format, self.converter(second))
        return f"{self._stamp},{msecs:03d}"


def _msecs(created: float) -> int:
    return int((created - int(created)) * 1000)  # as LogRecord works out its msecs


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
        if not self._batching():
            self.flush()  # what waits goes first: the lines stay in order
            super().emit(record)
            return
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._queue(line)

    def write_line(self, line: str) -> None:
        """A line formatted already (`InfoLines`), written as a record's would be."""
        if self._batching():
            self._queue(line)
            return
        self.flush()
        self.acquire()
        try:
            self.stream.write(line + self.terminator)
            self.stream.flush()
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": line}))
        finally:
            self.release()

    def _batching(self) -> bool:
        loop = self._loop
        return loop is not None and self._thread == threading.get_ident() and loop.is_running()

    def _queue(self, line: str) -> None:
        if not self._pending:
            assert self._loop is not None
            self._loop.call_soon(self.flush)
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


class InfoLines:
    """One logger's INFO lines (the access log's, one per request), written as `logger.info` would
    write them but without the `LogRecord`, its handler chain and `%` formatting, while the log is
    set up as `configure_logging` leaves it: a `LineHandler` with one of our formatters on the root,
    no filters, nothing else on the logger or its parents. Otherwise (a test's capture, an
    embedding application's own handlers) through `logging` itself."""

    __slots__ = ("_logger",)

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def enabled(self) -> bool:
        return self._logger.isEnabledFor(logging.INFO)

    def info(self, message: str, fields: dict[str, Any] | None) -> None:
        if not self._logger.isEnabledFor(logging.INFO):
            return
        handler = self._direct()
        if handler is None:
            self._logger.info("%s", message, extra={"fields": fields})
        elif handler.level <= logging.INFO:
            formatter = cast(LineFormatter, handler.formatter)
            handler.write_line(formatter.line(time.time(), "INFO", self._logger.name, message, fields))

    def _direct(self) -> LineHandler | None:
        root = logging.root
        handlers = root.handlers
        if len(handlers) != 1 or root.filters:
            return None
        handler = handlers[0]
        if type(handler) is not LineHandler or handler.filters or not isinstance(handler.formatter, LineFormatter):
            return None
        logger: logging.Logger | None = self._logger
        while logger is not None and logger is not root:
            if logger.handlers or logger.filters or not logger.propagate:
                return None
            logger = logger.parent
        return handler


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
