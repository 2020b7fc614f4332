"""Facts about Ollama's HTTP API that the proxy decides with: its path space, how a request path is
normalised, how a `/proxy-context/...` prefix splits off, and how model names compare. (What each
operation is — inference, management, merged — is `core.operations`.)

Pure: it only looks at strings and dicts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache

CONTEXT_PREFIX = "/proxy-context/"
# Ollama's whole path space: `/` ("Ollama is running"), the native API and the OpenAI-compatible
# layer. Anything else (a backend's debug or control routes, a simulator's /sim/*) is not forwarded.
_API_PREFIXES = ("/api/", "/v1/")
_API_EXACT = frozenset({"/", "/api", "/v1"})
_UNSAFE_PATH_CHARS = re.compile(r"[\\\x00-\x1f\x7f]")


def normalized_path(path: str) -> str:
    """The request path as an origin-form path: `/` + segments, with empty and dot segments resolved.

    The result always starts with exactly one slash, so joined to a backend's origin it can never
    name another authority, whatever the client sent (`//host:port/...`, `/a/../../x`, encoded
    slashes once decoded). Raises ValueError for a backslash or a control character, which no
    Ollama path has and which some servers read as a separator.
    """
    if _UNSAFE_PATH_CHARS.search(path):
        raise ValueError("invalid request path: backslashes and control characters are not allowed")
    if "//" not in path and "/." not in path:
        return path if path.startswith("/") else "/" + path
    segments: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment and segment != ".":
            segments.append(segment)
    trailing = "/" if path.endswith(("/", "/.", "/..")) and segments else ""
    return "/" + "/".join(segments) + trailing


def is_api_path(path: str) -> bool:
    """Whether a normalised path is in Ollama's path space (and so may be forwarded)."""
    return path in _API_EXACT or path.startswith(_API_PREFIXES)


class SizeMode(Enum):
    PASSTHROUGH = "passthrough"
    AUTO = "auto"
    FIXED = "fixed"


@dataclass(slots=True)  # not frozen: built twice per request (see service.reply.Call)
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
    choice = context_choice(spec, sizes)
    if choice is None:
        valid = ", ".join(["auto", *map(str, sizes)])
        raise ValueError(f"invalid context size {spec!r} in {CONTEXT_PREFIX}{{size}}/: use one of {valid}")
    return ContextRoute(choice[0], "/" + rest, choice[1])


def context_choice(spec: str, sizes: Sequence[int]) -> tuple[SizeMode, int | None] | None:
    """`auto` or one of the configured `sizes` as the route spells them; None for anything else (each
    front words its own refusal). Compared as text: "08192", "8_192" or full-width digits pass int()
    but are not the route the proxy publishes."""
    if spec == "auto":
        return SizeMode.AUTO, None
    if spec in {str(s) for s in sizes}:
        return SizeMode.FIXED, int(spec)
    return None


def sizes_itself(body: dict[str, object]) -> bool:
    """The client set its own context window (`options.num_ctx`, native or as the OpenAI extension)."""
    options = body.get("options")
    return isinstance(options, dict) and options.get("num_ctx") is not None


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
