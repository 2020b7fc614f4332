"""Model listings across every backend: `/api/tags`, `/api/ps` and `/v1/models` as one answer.

Each backend is asked in its own protocol (an OpenAI-type server's `/v1/models` stands in for
`/api/tags`; it has no `/api/ps`); a backend that does not answer is left out of the listing and logged,
never fails it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ollama_proxy.adapters.http.replies import error_response, json_response
from ollama_proxy.core.ollama_api import canonical_model
from ollama_proxy.core.openai.responses import find_model, models_list
from ollama_proxy.core.openai.reverse_responses import tags_from_models
from ollama_proxy.service.pool import Backend, BackendPool

log = logging.getLogger("ollama_proxy.listings")

V1_MODELS = "/v1/models"
_TIMEOUT_S = 5.0


class Listings:
    def __init__(self, pool: BackendPool) -> None:
        self.pool = pool

    async def merged(self, path: str, headers: Mapping[str, str]) -> web.Response:
        """/api/tags or /api/ps over every backend: one entry per model, naming the backends that have it."""
        merged: dict[str, dict[str, Any]] = {}
        for backend, answer in await self._ask_all(path):
            if path == "/api/ps" and backend.is_ollama:
                backend.apply_ps(answer)
            for entry in answer.get("models") or []:
                key = canonical_model(str(entry.get("model") or entry.get("name")))
                if key in merged:
                    merged[key]["backends"].append(backend.id)
                else:
                    merged[key] = {**entry, "backend": backend.id, "backends": [backend.id]}
        return json_response({"models": list(merged.values())}, headers=headers)

    async def openai_models(self, path: str, headers: Mapping[str, str]) -> web.Response:
        """/v1/models (or /v1/models/{id}) over every backend; `data` is `[]` when empty, never null."""
        tags: dict[str, Any] = {"models": []}
        seen: set[str] = set()
        for _, answer in await self._ask_all("/api/tags"):
            for entry in answer.get("models") or []:
                key = canonical_model(str(entry.get("name") or entry.get("model")))
                if key not in seen:
                    seen.add(key)
                    tags["models"].append(entry)
        if path == V1_MODELS:
            return json_response(models_list(tags), headers=headers)
        wanted = path[len(V1_MODELS) + 1:]
        found = find_model(tags, wanted)
        if found is None:
            return error_response(path, f"model '{wanted}' not found", 404, headers=headers)
        return json_response(found, headers=headers)

    async def _ask_all(self, path: str) -> list[tuple[Backend, dict[str, Any]]]:
        backends = [b for b in self.pool if b.config.enabled]
        answers = await asyncio.gather(*(self._ask(b, path) for b in backends), return_exceptions=True)
        out = []
        for backend, answer in zip(backends, answers, strict=True):
            if isinstance(answer, BaseException):
                log.warning("%s from %s failed: %s", path, backend.id, answer)
            else:
                out.append((backend, answer))
        return out

    @staticmethod
    async def _ask(backend: Backend, path: str) -> dict[str, Any]:
        if not backend.is_ollama:
            if path == "/api/ps":
                return {"models": []}
            return tags_from_models(await backend.upstream.get_json(V1_MODELS, timeout_s=_TIMEOUT_S))
        answer = await backend.upstream.get_json(path, timeout_s=_TIMEOUT_S)
        return answer if isinstance(answer, dict) else {}
