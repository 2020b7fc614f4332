"""The request ids the proxy makes: UUID version 4 (llama-cpp-python refuses any other X-Request-ID) and unique."""

from __future__ import annotations

import uuid

from ollama_proxy.adapters.http.calls import new_request_id
from ollama_proxy.core.request_ids import is_uuid


def test_a_new_request_id_is_a_version_4_uuid() -> None:
    for _ in range(2000):
        text = new_request_id()
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)
        assert is_uuid(text)


def test_request_ids_do_not_repeat() -> None:
    assert len({new_request_id() for _ in range(50_000)}) == 50_000
