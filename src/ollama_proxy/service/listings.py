"""Model listings across every backend: tags, running models and the OpenAI model list as one answer.

Each backend is asked in its own protocol (an OpenAI-type server's `/v1/models` stands in for
`/api/tags`; it has no `/api/ps`); a backend that does not answer is left out of the listing and logged,
never fails it. Answers are plain dicts: each front renders them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ollama_proxy.core.ollama_api import canonical_model
from ollama_proxy.core.openai.responses import find_model, models_list
from ollama_proxy.core.openai.reverse_responses import tags_from_models
from ollama_proxy.errors import BadRequest, NoBackendAvailable
from ollama_proxy.service.pool import Backend, BackendPool

log = logging.getLogger("ollama_proxy.listings")

V1_MODELS = "/v1/models"
_TIMEOUT_S = 5.0
_PS = "/api/ps"


class Listings:
    def __init__(self, pool: BackendPool) -> None:
        self.pool = pool

    async def merged(self, running: bool) -> dict[str, Any]:
        """Tags (or, `running`, /api/ps) over every backend: one entry per model, naming the backends
        that have it."""
        path = _PS if running else "/api/tags"
        merged: dict[str, dict[str, Any]] = {}
        for backend, answer in await self._ask_all(path):
            if running and backend.is_ollama:
                self.pool.apply_ps(backend, answer)
            for entry in answer.get("models") or []:
                key = canonical_model(str(entry.get("model") or entry.get("name")))
                if key in merged:
                    merged[key]["backends"].append(backend.id)
                else:
                    merged[key] = {**entry, "backend": backend.id, "backends": [backend.id]}
        return {"models": list(merged.values())}

    async def openai_models(self, model_id: str | None = None) -> dict[str, Any]:
        """The OpenAI model list (or one model) over every backend; `data` is `[]` when empty, never null.
        An unknown model id is a 404."""
        tags: dict[str, Any] = {"models": []}
        seen: set[str] = set()
        for _, answer in await self._ask_all("/api/tags"):
            for entry in answer.get("models") or []:
                key = canonical_model(str(entry.get("name") or entry.get("model")))
                if key not in seen:
                    seen.add(key)
                    tags["models"].append(entry)
        if model_id is None:
            return models_list(tags)
        found = find_model(tags, model_id)
        if found is None:
            raise BadRequest(f"model '{model_id}' not found", 404)
        return found

    async def _ask_all(self, path: str) -> list[tuple[Backend, dict[str, Any]]]:
        backends = [b for b in self.pool if b.config.enabled]
        answers = await asyncio.gather(*(self._ask(b, path) for b in backends), return_exceptions=True)
        out = []
        failures: dict[str, str] = {}
        for backend, answer in zip(backends, answers, strict=True):
            if isinstance(answer, BaseException):
                log.warning("%s from %s failed: %s", path, backend.id, answer)
                failures[backend.id] = str(answer)
            else:
                out.append((backend, answer))
        if failures and not out:
            # Not an empty list: with every backend down, /v1/models fails as /api/tags does (502).
            raise NoBackendAvailable(f"no backend answered {path}: " + "; ".join(
                f"{b}: {why}" for b, why in failures.items()), failures, status=502)
        return out

    @staticmethod
    async def _ask(backend: Backend, path: str) -> dict[str, Any]:
        if not backend.is_ollama:
            if path == _PS:
                return {"models": []}
            return tags_from_models(await backend.client.get_json(V1_MODELS, timeout_s=_TIMEOUT_S))
        answer = await backend.client.get_json(path, timeout_s=_TIMEOUT_S)
        return answer if isinstance(answer, dict) else {}
