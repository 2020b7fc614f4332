"""`server.upstream_client` chooses the client every backend is reached with; https stays with aiohttp."""

from __future__ import annotations

import pytest

from ollama_proxy.adapters.http.server import FRONT_KEY
from ollama_proxy.adapters.upstream.aiohttp_client import AiohttpBackendClient
from ollama_proxy.adapters.upstream.raw_client import RawBackendClient
from ollama_proxy.app import build_app
from ollama_proxy.config.load import validate

BACKENDS = [{"id": "plain", "endpoint": "http://127.0.0.1:11434"}, {"id": "tls", "endpoint": "https://gpu-box:443"}]


@pytest.mark.parametrize(("server", "plain"), [({}, RawBackendClient), ({"upstream_client": "raw"}, RawBackendClient),
                                               ({"upstream_client": "aiohttp"}, AiohttpBackendClient)])
async def test_the_switch_chooses_the_client(server: dict[str, str], plain: type) -> None:
    app = build_app(validate({"backends": BACKENDS, "server": server}))
    backends = app[FRONT_KEY].pipeline.pool.backends
    assert type(backends["plain"].client) is plain
    assert type(backends["tls"].client) is AiohttpBackendClient


def test_an_unknown_client_is_refused() -> None:
    with pytest.raises(ValueError, match="upstream_client"):
        validate({"server": {"upstream_client": "curl"}})
