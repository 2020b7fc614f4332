"""The real Anthropic SDK in front of a canned answer: what the tests feed the translation's output to.

No sockets: the SDK's own HTTP client runs on a mock transport that records each request body and answers
with one prepared response (a JSON body, or SSE bytes framed as the front frames events).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anthropic
import orjson

try:  # anthropic 2.x builds on httpx2; earlier versions on httpx
    import httpx2 as sdk_http
except ImportError:  # pragma: no cover - depends on the installed SDK
    import httpx as sdk_http  # type: ignore[no-redef]


def sse(events: list[dict[str, Any]]) -> bytes:
    """Events framed as the front frames them: `event: <type>` and the JSON on one `data:` line."""
    return b"".join(b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
                    for event in events)


@dataclass
class FakeApi:
    """Answers every request with `status` and `body`; keeps the JSON bodies the SDK sent."""

    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"
    requests: list[dict[str, Any]] = field(default_factory=list)

    def answer_json(self, value: dict[str, Any], status: int = 200) -> None:
        self.status, self.body, self.content_type = status, orjson.dumps(value), "application/json"

    def answer_events(self, events: list[dict[str, Any]]) -> None:
        self.status, self.body, self.content_type = 200, sse(events), "text/event-stream"

    def handle(self, request: Any) -> Any:
        self.requests.append(orjson.loads(request.content))
        return sdk_http.Response(self.status, headers={"content-type": self.content_type}, content=self.body)

    def client(self) -> anthropic.Anthropic:
        http = sdk_http.Client(transport=sdk_http.MockTransport(self.handle))
        return anthropic.Anthropic(api_key="test-key", base_url="http://proxy.test", http_client=http,
                                   max_retries=0)
