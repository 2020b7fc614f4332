"""The access log through the real proxy: the route as the client wrote it, the sizing, and the same
fields as one JSON object per line with `--log-format json`."""

from __future__ import annotations

import logging
import sys
from typing import Any

import aiohttp
import orjson
import pytest

from ollama_proxy.logs import JsonFormatter
from ollama_proxy.sim import SimServer


async def test_access_line_shows_route_and_sizing_in_text_and_json(proxy_factory: Any, sim: SimServer,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    proxy = await proxy_factory({"backends": [{"id": "sim", "endpoint": sim.url}],
                                 "server": {"log_format": "json"}})
    caplog.set_level(logging.INFO, logger="ollama_proxy.access")
    async with aiohttp.ClientSession() as session, session.post(
            proxy + "/proxy-context/auto/api/generate",
            json={"model": "llama3.2", "prompt": "hi", "stream": False}) as r:
        assert r.status == 200
        request_id, size = r.headers["X-Request-ID"], int(r.headers["X-Proxy-Context-Size"])
    [record] = [rec for rec in caplog.records if rec.name == "ollama_proxy.access"]
    text = record.getMessage()
    assert "POST /proxy-context/auto/api/generate model=llama3.2 backend=sim" in text
    assert f"num_ctx={size} (fits-bucket)" in text and "status=200" in text
    entry = orjson.loads(JsonFormatter().format(record))
    assert entry["request_id"] == request_id and entry["path"] == "/proxy-context/auto/api/generate"
    assert (entry["num_ctx"], entry["sizing_reason"], entry["status"], entry["backend"]) == (
        size, "fits-bucket", 200, "sim")
    assert entry["level"] == "INFO" and isinstance(entry["duration_ms"], float)


def test_json_lines_carry_tracebacks_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", ("here",), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = orjson.loads(line)
    assert entry["message"] == "failed here" and "ValueError: boom" in entry["traceback"]
