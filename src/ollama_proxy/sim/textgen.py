"""Deterministic "model output" for the simulator: prompt rendering, replies, tool calls, embeddings.

Everything is a pure function of its arguments (seed, model, prompt), so two runs of the same
test see the same text. Nothing here knows about HTTP, timing or loaded models.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

_WORDS = ("the", "model", "answer", "is", "simple", "and", "clear", "a", "context", "window", "token",
          "here", "we", "can", "see", "that", "it", "works", "well", "for", "this", "question", "local",
          "server", "response", "seven", "prime", "number", "value", "data", "result", "good", "fast",
          "quiet", "small", "large", "one", "two", "three", "more")


def render_chat(messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] = ()) -> str:
    """Render a chat the ChatML way, tools described in the system turn, ending at the assistant cue."""
    parts = []
    if tools:
        parts.append(f"<|im_start|>system\n# Tools\n{orjson.dumps(list(tools)).decode()}<|im_end|>\n")
    for message in messages:
        content = message.get("content") or ""
        if message.get("tool_calls"):
            content += orjson.dumps(message["tool_calls"]).decode()
        parts.append(f"<|im_start|>{message.get('role', 'user')}\n{content}<|im_end|>\n")
    parts.append("<|im_start|>assistant\n")
    return "".join(parts)


def render_generate(prompt: str, system: str = "", suffix: str = "") -> str:
    system_part = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
    return f"{system_part}<|im_start|>user\n{prompt}{suffix}<|im_end|>\n<|im_start|>assistant\n"


@dataclass(frozen=True, slots=True)
class Reply:
    """What the model "says": text pieces (one token each) and why it stopped."""

    pieces: list[str]
    done_reason: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def _rng(*key: object) -> random.Random:
    return random.Random("\x1f".join(str(k) for k in key))


def plan_reply(seed: int, model: str, prompt: str, budget: int, lengths: tuple[int, int] = (5, 40)) -> Reply:
    """A sentence of `lengths` tokens chosen by the prompt, cut at `budget` tokens (done_reason "length")."""
    rng = _rng(seed, model, prompt)
    length = rng.randint(*lengths)
    # `length` tokens: the words, then the full stop (a one-token reply is a single word).
    words = [rng.choice(_WORDS) for _ in range(max(1, length - 1))]
    pieces = [words[0].capitalize()] + [f" {w}" for w in words[1:]] + (["."] if length > 1 else [])
    if budget < len(pieces):
        return Reply(pieces[:budget], "length")
    return Reply(pieces, "stop")


_WORD = re.compile(r"[A-Za-z][\w-]*")


def _argument(schema: Mapping[str, Any], prompt: str) -> Any:
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type", "string")
    kind = kind[0] if isinstance(kind, list) and kind else kind
    words = _WORD.findall(prompt)
    defaults: dict[str, Any] = {"integer": 1, "number": 1.0, "boolean": True, "array": [], "object": {}}
    # The prompt's last word is usually the thing asked about ("Weather in Oslo?" -> "Oslo").
    return defaults.get(kind, words[-1] if words else "value")


def _asks_for(tool: Mapping[str, Any], prompt: str) -> bool:
    name = str(tool.get("function", {}).get("name", ""))
    wanted = {name.lower(), *(w for w in re.split(r"[_\W]+", name.lower()) if len(w) > 3)}
    words = set(re.findall(r"[a-z0-9_]+", prompt.lower()))
    return bool(wanted & words) or "tool" in words


def plan_tool_calls(seed: int, tools: Sequence[Mapping[str, Any]],
                    messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Call the first tool the last user message asks for, with its required arguments filled in.

    A chat whose last message is a tool result gets no call, so client tool loops terminate.
    """
    if not tools or not messages or messages[-1].get("role") != "user":
        return []
    prompt = str(messages[-1].get("content") or "")
    tool = next((t for t in tools if isinstance(t, Mapping) and _asks_for(t, prompt)), None)
    if tool is None:
        return []
    function = tool.get("function", {})
    params = function.get("parameters") or {}
    properties = params.get("properties") or {}
    arguments = {name: _argument(properties.get(name, {}), prompt) for name in params.get("required") or ()}
    rng = _rng(seed, "call", prompt)
    call_id = "call_" + "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    call = {"index": 0, "name": function.get("name", ""), "arguments": arguments}
    return [{"id": call_id, "function": call}]


def embed_vector(model: str, text: str, dimensions: int) -> list[float]:
    """A unit vector drawn from the text's hash: equal texts embed equally, others almost orthogonally."""
    rng = random.Random(hashlib.sha256(f"{model}\x1f{text}".encode()).digest())
    vector = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    return normalise(vector)


def normalise(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]
