"""Which client calls are translated into a native Ollama call, keyed by what the front decided: the
operation and the dialect it came in. A call not listed here goes to the backend as the client sent it.
`COUNTED_ONLY` lists the calls the proxy answers itself from its token counter. Pure: the tables only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ollama_proxy.core.anthropic import count_tokens_to_native, messages_to_native
from ollama_proxy.core.openai.requests import chat_to_native, completion_to_native, embeddings_to_native
from ollama_proxy.core.openai.responses_api import responses_to_native
from ollama_proxy.core.operations import Dialect, Operation
from ollama_proxy.core.translation import NativeCall

TRANSLATORS: dict[tuple[Dialect, Operation], Callable[[Any], NativeCall]] = {
    (Dialect.OPENAI, Operation.CHAT): chat_to_native,
    (Dialect.OPENAI, Operation.COMPLETION): completion_to_native,
    (Dialect.OPENAI, Operation.EMBED): embeddings_to_native,
    (Dialect.OPENAI, Operation.RESPONSES): responses_to_native,
    (Dialect.ANTHROPIC, Operation.CHAT): messages_to_native,
}

# An operation answered by counting: its request as the native body to count, and the reply for a count.
COUNTED_ONLY: dict[Operation, tuple[Callable[[Any], dict[str, Any]], Callable[[int], dict[str, Any]]]] = {
    Operation.COUNT_TOKENS: (count_tokens_to_native, lambda tokens: {"input_tokens": tokens}),
}
