"""Typed reads of JSON request fields, raising OpenAI-shaped 400s that name the parameter.

Ollama answers a wrongly typed option with a 500 (reference 3.1); checking here means the
client hears "400, `temperature` must be a number" instead. Knows nothing about endpoints.
"""

from __future__ import annotations

from typing import Any

from ollama_proxy.core.openai.errors import OpenAIRequestError


def json_object(body: Any) -> dict[str, Any]:
    """The request body, which must be a JSON object (every translator starts here)."""
    if not isinstance(body, dict):
        raise OpenAIRequestError("the request body must be a JSON object")
    return body


def number(body: dict[str, Any], key: str, low: float, high: float) -> float | None:
    """The number at `key` within [low, high], or None when absent or null."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OpenAIRequestError(f"'{key}' must be a number, got {value!r}", param=key)
    if not low <= value <= high:
        raise OpenAIRequestError(f"'{key}' must be between {low:g} and {high:g}, got {value!r}", param=key)
    return value


def integer(body: dict[str, Any], key: str, low: int | None = None) -> int | None:
    """The integer at `key` (at least `low` when given), or None when absent or null."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise OpenAIRequestError(f"'{key}' must be an integer, got {value!r}", param=key)
    if low is not None and value < low:
        raise OpenAIRequestError(f"'{key}' must be at least {low}, got {value}", param=key)
    return value


def boolean(body: dict[str, Any], key: str, default: bool = False) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise OpenAIRequestError(f"'{key}' must be true or false, got {value!r}", param=key)
    return value


def string(body: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise OpenAIRequestError(f"'{key}' is required", param=key)
        return None
    if not isinstance(value, str):
        raise OpenAIRequestError(f"'{key}' must be a string, got {type(value).__name__}", param=key)
    return value


def mapping(body: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise OpenAIRequestError(f"'{key}' must be an object, got {type(value).__name__}", param=key)
    return value


def stop_list(body: dict[str, Any]) -> list[str] | None:
    """`stop` as a list: OpenAI allows a string or a list of strings, Ollama wants a list."""
    value = body.get("stop")
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise OpenAIRequestError("'stop' must be a string or a list of strings", param="stop")


def model_name(body: dict[str, Any]) -> str:
    model = string(body, "model", required=True)
    if not model:
        raise OpenAIRequestError("'model' must not be empty", param="model")
    return model
