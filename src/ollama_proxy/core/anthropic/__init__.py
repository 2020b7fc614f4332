"""Translation between the Anthropic Messages API and Ollama's native `/api/chat`.

`requests` (`/v1/messages` and `/v1/messages/count_tokens` bodies → native), `messages` (system
prompt and history), `replies` (a native reply → a Message object), `stream` (native NDJSON →
Anthropic stream events), `errors` (Anthropic error bodies). Pure: dicts in, dicts out; the
front frames the events and the pipeline does all I/O.
"""

from __future__ import annotations

from ollama_proxy.core.anthropic.errors import AnthropicRequestError, anthropic_error, error_type_for_status
from ollama_proxy.core.anthropic.replies import message_from_native, new_message_id
from ollama_proxy.core.anthropic.requests import count_tokens_to_native, messages_to_native
from ollama_proxy.core.anthropic.stream import MessagesReply, MessageTranslator

__all__ = [
    "AnthropicRequestError",
    "MessageTranslator",
    "MessagesReply",
    "anthropic_error",
    "count_tokens_to_native",
    "error_type_for_status",
    "message_from_native",
    "messages_to_native",
    "new_message_id",
]
