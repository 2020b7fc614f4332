"""How the proxy writes its log: plain lines for people, or one JSON object per line for log collectors
(`--log-format json`, `server.log_format`). A record may carry `fields` (the access log's model, backend,
num_ctx, ...): the text form has them in its message already, the JSON form adds them as keys.
"""

from __future__ import annotations

import logging
import time
from typing import Any

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


def configure_logging(level: str, log_format: str = "text") -> None:
    # Neither format shows the caller's file and line, thread or process: not worked out per record
    # (the logging HOWTO's "Optimization"; finding the caller walks the stack). For the whole process:
    # `%(filename)s`, `%(lineno)d`, `stack_info` and `stacklevel` say nothing from here on.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=getattr(logging, level), handlers=[handler], force=True)
