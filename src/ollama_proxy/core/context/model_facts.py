"""Facts about models read out of Ollama's JSON: trained context, loaded contexts, digests.

`/api/show` gives the trained maximum (`<arch>.context_length`, the cap Ollama applies to `num_ctx`),
`/api/ps` the context each loaded model's runner was started with (since v0.9.7), and `/api/tags` the
digest that names a model's exact weights (the tokenizer cache key). Reference ollama-api.md 2.7, 2.9, 5.

Pure functions over already-parsed JSON; they must not know how or when it was fetched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ollama_proxy.core.ollama_api import canonical_model


def trained_context_length(model_info: Mapping[str, Any]) -> int | None:
    """The model's trained maximum context from `/api/show` `model_info`, or None if it does not say."""
    arch = model_info.get("general.architecture")
    if isinstance(arch, str):
        value = model_info.get(f"{arch}.context_length")
    else:
        # Without the architecture key, take the one `*.context_length` entry if there is exactly one.
        found = [v for k, v in model_info.items() if k.endswith(".context_length")]
        value = found[0] if len(found) == 1 else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def loaded_contexts(ps: Mapping[str, Any]) -> dict[str, int]:
    """`{model name: context_length}` for the models `/api/ps` lists as loaded.

    Entries without `context_length` (Ollama before v0.9.7) are left out: their context is unknown,
    which sizing treats as "not loaded".
    """
    loaded: dict[str, int] = {}
    models = ps.get("models")
    if not isinstance(models, list):
        return loaded
    for entry in models:
        if not isinstance(entry, Mapping):
            continue
        context = entry.get("context_length")
        if not isinstance(context, int) or isinstance(context, bool) or context <= 0:
            continue
        for key in ("model", "name"):
            name = entry.get(key)
            if isinstance(name, str) and name:
                loaded[canonical_model(name)] = context
    return loaded


def model_digests(tags: Mapping[str, Any]) -> dict[str, str]:
    """`{model name: digest}` from `/api/tags` (also fits `/api/ps`, whose entries carry a digest)."""
    digests: dict[str, str] = {}
    models = tags.get("models")
    if not isinstance(models, list):
        return digests
    for entry in models:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("digest"), str):
            continue
        for key in ("model", "name"):
            name = entry.get(key)
            if isinstance(name, str) and name:
                digests[canonical_model(name)] = entry["digest"]
    return digests
