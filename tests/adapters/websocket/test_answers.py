"""The WebSocket front's outgoing frames (`adapters.websocket.answers`): pure encoding, no sockets."""

from __future__ import annotations

import orjson

from ollama_proxy.adapters.websocket.answers import Answers, error_frame, token_of
from ollama_proxy.core.operations import Operation
from ollama_proxy.errors import NoBackendAvailable
from ollama_proxy.service.reply import CallRecord


def test_only_the_first_frame_carries_ttft() -> None:
    answers = Answers('id "quoted"', started=10.0)
    first = orjson.loads(answers.token("Hel", now=10.25))
    second = orjson.loads(answers.token('lo "world"\n', now=10.5))
    assert first == {"request_id": 'id "quoted"', "token": "Hel", "ttft_ms": 250.0}
    assert second == {"request_id": 'id "quoted"', "token": 'lo "world"\n'}
    final = orjson.loads(answers.final(CallRecord(started=10.0, backend_id="npu"), {"eval_count": 2}, 2048, now=11.0))
    assert "ttft_ms" not in final and final["total_ms"] == 1000.0 and final["num_ctx"] == 2048


def test_a_reply_without_tokens_puts_ttft_on_its_final_frame() -> None:
    answers = Answers("r", started=0.0)
    final = orjson.loads(answers.final(CallRecord(backend_id="cpu"), {"prompt_eval_count": 3, "eval_count": 0,
                                                                      "done_reason": "stop"}, None, now=0.5))
    assert final == {"request_id": "r", "done": True, "backend": "cpu", "routing_reason": None,
                     "prompt_eval_count": 3, "eval_count": 0, "total_ms": 500.0, "num_ctx": None,
                     "done_reason": "stop", "ttft_ms": 500.0}


def test_a_refusal_keeps_what_http_would_say() -> None:
    refusal = NoBackendAvailable("queue full", {"npu": "queue full"}, status=429, retry_after_s=2.0)
    assert orjson.loads(Answers("r", 0.0).refused(refusal)) == {
        "request_id": "r", "error": "queue full", "status": 429, "excluded": {"npu": "queue full"},
        "retry_after_s": 2.0}
    assert orjson.loads(error_frame(None, "invalid JSON", 400)) == {"error": "invalid JSON", "status": 400}


def test_the_token_of_each_operation() -> None:
    assert token_of({"response": "a"}, Operation.GENERATE) == "a"
    assert token_of({"message": {"role": "assistant", "content": "b"}}, Operation.CHAT) == "b"
    assert token_of({"done": True}, Operation.CHAT) is None
    assert token_of({"message": "not an object"}, Operation.CHAT) is None
