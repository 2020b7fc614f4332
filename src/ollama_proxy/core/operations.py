"""What a call asks for, independent of the protocol it came in: an `Operation` (generate, chat, embed,
show, pull, ...) in a client `Dialect` (Ollama's native API, the OpenAI-compatible one, or Anthropic's Messages API).

Each front decides these once, from its URL, RPC method or bus call; everything after (counting,
sizing, routing, translation, relaying) decides from the operation's facts here, never from a path.
Pure: values only.
"""

from __future__ import annotations

from enum import StrEnum


class Dialect(StrEnum):
    OLLAMA = "ollama"
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


class Operation(StrEnum):
    """Every operation the proxy treats specially; anything else in Ollama's path space is OTHER and
    forwarded as it came."""

    GENERATE = "generate"
    CHAT = "chat"
    EMBED = "embed"
    EMBEDDINGS = "embeddings"  # the legacy single-prompt embedding call
    COMPLETION = "completion"  # OpenAI's legacy text completion (Ollama serves it as a generate)
    RESPONSES = "responses"  # OpenAI's Responses API: a chat, in its own request and event shapes
    COUNT_TOKENS = "count_tokens"  # Anthropic's token count: answered by the proxy's own counter
    SHOW = "show"
    PULL = "pull"
    PUSH = "push"
    CREATE = "create"
    COPY = "copy"
    DELETE = "delete"
    TAGS = "tags"
    PS = "ps"
    MODELS = "models"  # OpenAI's model list (or one model), merged like tags
    OTHER = "other"

    # The operation's facts, set on every member below: read several times per request, where a
    # property's set lookup would hash the member in Python (Enum.__hash__).
    runs_model: bool  # inference: takes `options.num_ctx`, is counted and sized, reports metrics to learn from
    json_body: bool  # its native request body is a JSON object (Ollama answers 400 to malformed JSON)
    management: bool  # changes one server's models: goes to one chosen backend (and its list is re-read)
    merged: bool  # a view merged over every backend when there are several
    ends_with_done_line: bool  # its native stream ends with a `done: true` line: one without was cut short


_RUNS_MODEL = frozenset({Operation.GENERATE, Operation.CHAT, Operation.EMBED, Operation.EMBEDDINGS,
                         Operation.COMPLETION, Operation.RESPONSES})
_MANAGEMENT = frozenset({Operation.PULL, Operation.PUSH, Operation.CREATE, Operation.COPY, Operation.DELETE})
_JSON_BODY = _RUNS_MODEL | _MANAGEMENT | {Operation.SHOW, Operation.COUNT_TOKENS}
_MERGED = frozenset({Operation.TAGS, Operation.PS, Operation.MODELS})

for _operation in Operation:
    _operation.runs_model = _operation in _RUNS_MODEL
    _operation.json_body = _operation in _JSON_BODY
    _operation.management = _operation in _MANAGEMENT
    _operation.merged = _operation in _MERGED
    _operation.ends_with_done_line = _operation is Operation.GENERATE or _operation is Operation.CHAT
del _operation
