"""Translation between the OpenAI API and Ollama's native API, in both directions.

OpenAI clients → Ollama backends: `requests` (OpenAI request → native call), `responses`
(native reply → OpenAI object), `stream` (native NDJSON → OpenAI SSE); the Responses API in
`responses_api` (request, whole reply) and `responses_events` (its stream). Ollama clients →
OpenAI-type backends: `reverse_requests` and `reverse_responses`. `sse` decodes and encodes
server-sent events; `errors` shapes OpenAI errors. Pure: dicts in, dicts and bytes out; the
HTTP adapter does all reading, writing and clock-keeping.
"""

from __future__ import annotations

from ollama_proxy.core.openai.errors import (
    BackendReplyError,
    OpenAIRequestError,
    error_type_for_status,
    openai_error,
)
from ollama_proxy.core.openai.requests import (
    ReplyContext,
    RequestKind,
    chat_to_native,
    completion_to_native,
    embeddings_to_native,
)
from ollama_proxy.core.openai.responses import (
    chat_completion,
    embeddings_list,
    error_from_native,
    find_model,
    models_list,
    new_completion_id,
    reply_from_native,
    text_completion,
)
from ollama_proxy.core.openai.responses_api import ResponsesContext, responses_to_native
from ollama_proxy.core.openai.responses_events import ResponsesTranslator
from ollama_proxy.core.openai.reverse_requests import (
    REVERSE_TRANSLATORS,
    NativeKind,
    NativeReplyContext,
    OpenAIRequest,
    chat_to_openai,
    embed_to_openai,
    generate_to_openai,
    is_load_only,
)
from ollama_proxy.core.openai.reverse_responses import (
    NativeStreamTranslator,
    load_only_reply,
    native_error,
    native_reply,
    tags_from_models,
)
from ollama_proxy.core.openai.sse import DONE_EVENT, SseDecoder, SseEvent, encode_event
from ollama_proxy.core.openai.stream import StreamTranslator

__all__ = [
    "DONE_EVENT",
    "REVERSE_TRANSLATORS",
    "BackendReplyError",
    "NativeKind",
    "NativeReplyContext",
    "NativeStreamTranslator",
    "OpenAIRequest",
    "OpenAIRequestError",
    "ReplyContext",
    "RequestKind",
    "ResponsesContext",
    "ResponsesTranslator",
    "SseDecoder",
    "SseEvent",
    "StreamTranslator",
    "chat_completion",
    "chat_to_native",
    "chat_to_openai",
    "completion_to_native",
    "embed_to_openai",
    "embeddings_list",
    "embeddings_to_native",
    "encode_event",
    "error_from_native",
    "error_type_for_status",
    "find_model",
    "generate_to_openai",
    "is_load_only",
    "load_only_reply",
    "models_list",
    "native_error",
    "native_reply",
    "new_completion_id",
    "openai_error",
    "reply_from_native",
    "responses_to_native",
    "tags_from_models",
    "text_completion",
]
