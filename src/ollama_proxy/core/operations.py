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

    @property
    def runs_model(self) -> bool:
        """Inference: it takes `options.num_ctx`, is counted and sized, and reports metrics to learn from."""
        return self in _RUNS_MODEL

    @property
    def json_body(self) -> bool:
        """Its native request body is a JSON object (Ollama answers 400 to malformed JSON)."""
        return self in _JSON_BODY

    @property
    def management(self) -> bool:
        """It changes one server's models, so it goes to one chosen backend (and its list is re-read)."""
        return self in _MANAGEMENT

    @property
    def merged(self) -> bool:
        """A view merged over every backend when there are several."""
        return self in _MERGED

    @property
    def ends_with_done_line(self) -> bool:
        """Its native stream ends with a `done: true` line: a stream without one was cut short."""
        return self is Operation.GENERATE or self is Operation.CHAT


_RUNS_MODEL = frozenset({Operation.GENERATE, Operation.CHAT, Operation.EMBED, Operation.EMBEDDINGS,
                         Operation.COMPLETION, Operation.RESPONSES})
_MANAGEMENT = frozenset({Operation.PULL, Operation.PUSH, Operation.CREATE, Operation.COPY, Operation.DELETE})
_JSON_BODY = _RUNS_MODEL | _MANAGEMENT | {Operation.SHOW, Operation.COUNT_TOKENS}
_MERGED = frozenset({Operation.TAGS, Operation.PS, Operation.MODELS})
