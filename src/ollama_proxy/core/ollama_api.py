"""Facts about Ollama's native API that the proxy decides with: which paths carry JSON, which
stream by default, which run a model, and how a `/proxy-context/...` prefix splits off.

Pure: it only looks at strings and dicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import lru_cache

# Paths whose POST body is a JSON object (Ollama answers 400 to malformed JSON on these).
JSON_PATHS = frozenset({
    "/api/generate", "/api/chat", "/api/embed", "/api/embeddings", "/api/show", "/api/pull",
    "/api/push", "/api/create", "/api/copy", "/api/delete",
})
# Paths that run a model and so take `options.num_ctx`.
INFERENCE_PATHS = frozenset({"/api/generate", "/api/chat", "/api/embed", "/api/embeddings"})
# Model-management calls: they change one server's state, so they go to one chosen backend.
MANAGEMENT_PATHS = frozenset({"/api/pull", "/api/push", "/api/create", "/api/copy", "/api/delete"})
# Views that merge every backend's answer when there are several.
AGGREGATE_PATHS = frozenset({"/api/tags", "/api/ps"})

CONTEXT_PREFIX = "/proxy-context/"


class SizeMode(Enum):
    PASSTHROUGH = "passthrough"
    AUTO = "auto"
    FIXED = "fixed"


@dataclass(frozen=True, slots=True)
class ContextRoute:
    """How a request path asks for its context window to be sized."""

    mode: SizeMode
    path: str
    size: int | None = None


def split_context_route(path: str, sizes: tuple[int, ...], default: SizeMode) -> ContextRoute:
    """Split `/proxy-context/{auto|size}/{rest}` into a mode and the upstream path.

    Raises ValueError with the valid choices when the size segment is not `auto` or one of
    `sizes`.
    """
    if not path.startswith(CONTEXT_PREFIX):
        return ContextRoute(default, path)
    spec, _, rest = path[len(CONTEXT_PREFIX):].partition("/")
    upstream_path = "/" + rest
    if spec == "auto":
        return ContextRoute(SizeMode.AUTO, upstream_path)
    # Compared as text: "08192", "8_192" or full-width digits pass int() but are not the route we publish.
    if spec not in {str(s) for s in sizes}:
        valid = ", ".join(["auto", *map(str, sizes)])
        raise ValueError(f"invalid context size {spec!r} in {CONTEXT_PREFIX}{{size}}/: use one of {valid}")
    size = int(spec)
    return ContextRoute(SizeMode.FIXED, upstream_path, size)


def model_of(body: dict[str, object]) -> str | None:
    """The model a native or OpenAI body names (`name` is the deprecated spelling)."""
    model = body.get("model") or body.get("name") or body.get("source")
    return model if isinstance(model, str) and model else None


@lru_cache(maxsize=4096)
def canonical_model(name: str) -> str:
    """The one form in which the proxy compares model names.

    Ollama treats `llama3` and `llama3:latest` as the same model, matches names case-insensitively
    and fills in the default registry and `library/` namespace (reference 1.2). Cached: a handful
    of names is compared on every request.
    """
    name = name.strip().lower()
    for prefix in ("registry.ollama.ai/", "library/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    # The tag follows the last path segment; a colon before a slash is a registry port.
    return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"
