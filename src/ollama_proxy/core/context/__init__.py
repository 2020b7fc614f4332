"""The context engine's pure core: count a request's tokens and choose its `num_ctx`.

Data flow for one request (the HTTP adapter does the I/O around it):
1. `prompt_parts(body)` takes the text and images out of the request;
2. `count_prompt(parts, exact=..., estimate=..., overhead=...)` counts them with the model's tokenizer
   (`build_tokenizer` from `/api/show` verbose, cached per digest in an LRU, counts cached per
   text in `CachedCounter`) or with the `Calibrator`'s learned characters-per-token estimate;
3. `choose_num_ctx(config.context, ...)` turns the count, the reply budget, the model's trained maximum
   (`trained_context_length`) and its loaded context (`loaded_contexts` of `/api/ps`) into a `SizeDecision`;
4. on the response, `Calibrator.observe` learns from `prompt_eval_count` and `detect_truncation` says
   whether Ollama cut the prompt.
"""

from __future__ import annotations

from ollama_proxy.core.context.calibration import Calibrator, Observation, Truncation, detect_truncation
from ollama_proxy.core.context.counting import (
    IMAGE_TOKENS,
    CachedCounter,
    CharEstimate,
    CountMethod,
    PromptCount,
    PromptParts,
    TemplateOverhead,
    count_prompt,
    prompt_parts,
)
from ollama_proxy.core.context.model_facts import (
    loaded_contexts,
    model_digests,
    trained_context_length,
)
from ollama_proxy.core.context.sizing import (
    ContextPolicy,
    SizeDecision,
    SizeReason,
    SizingPolicy,
    choose_num_ctx,
    reply_tokens,
)
from ollama_proxy.core.context.tokenizer import (
    GgufTokenizer,
    TokenizerUnavailable,
    build_tokenizer,
)

__all__ = [
    "IMAGE_TOKENS",
    "CachedCounter",
    "Calibrator",
    "CharEstimate",
    "ContextPolicy",
    "CountMethod",
    "GgufTokenizer",
    "Observation",
    "PromptCount",
    "PromptParts",
    "SizeDecision",
    "SizeReason",
    "SizingPolicy",
    "TemplateOverhead",
    "TokenizerUnavailable",
    "Truncation",
    "build_tokenizer",
    "choose_num_ctx",
    "count_prompt",
    "detect_truncation",
    "loaded_contexts",
    "model_digests",
    "prompt_parts",
    "reply_tokens",
    "trained_context_length",
]
