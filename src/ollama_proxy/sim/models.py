"""The simulated server's installed models and blobs, and their /api/tags and /api/show shapes.

Knows nothing about loaded runners or HTTP; `sim.scheduler` decides what is in memory and the
handlers turn these dicts into responses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from ollama_proxy.sim.config import ModelSpec, canonical_name

CHATML_TEMPLATE = ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
                   "{{ end }}<|im_start|>assistant\n")
_VOCAB_SIZE = 128256


def timestamp(unix: float) -> str:
    """RFC 3339 in UTC, as Ollama's Go encoder writes times."""
    return datetime.fromtimestamp(unix, UTC).isoformat().replace("+00:00", "Z")


@dataclass(slots=True)
class InstalledModel:
    """A name on disk. `weights` keys the runner: copies and derived models share their base's."""

    name: str
    spec: ModelSpec
    weights: str
    modified_at: float
    parameters: dict[str, Any] = field(default_factory=dict)
    system: str = ""
    template: str = CHATML_TEMPLATE
    parent: str = ""

    @property
    def digest(self) -> str:
        key = f"{self.name}|{self.weights}|{sorted(self.parameters.items())}|{self.system}"
        return hashlib.sha256(key.encode()).hexdigest()

    @property
    def modelfile_num_ctx(self) -> int | None:
        value = self.parameters.get("num_ctx")
        return int(value) if isinstance(value, int | float) else None

    def renamed(self, name: str, modified_at: float) -> InstalledModel:
        return replace(self, name=canonical_name(name), modified_at=modified_at,
                       parameters=dict(self.parameters))


def install(spec: ModelSpec, modified_at: float) -> InstalledModel:
    params: dict[str, Any] = {} if spec.embedding else {"stop": ["<|im_start|>", "<|im_end|>"]}
    if spec.num_ctx is not None:
        params["num_ctx"] = spec.num_ctx
    weights = hashlib.sha256(f"weights:{spec.name}".encode()).hexdigest()
    return InstalledModel(spec.name, spec, weights, modified_at, params,
                          template="" if spec.embedding else CHATML_TEMPLATE)


class Registry:
    """Installed models by canonical, case-insensitive name, and uploaded blob digests."""

    def __init__(self) -> None:
        self._models: dict[str, InstalledModel] = {}
        self.blobs: dict[str, int] = {}

    def get(self, name: str) -> InstalledModel | None:
        return self._models.get(canonical_name(name).lower()) if name else None

    def add(self, model: InstalledModel) -> None:
        self._models[model.name.lower()] = model

    def remove(self, name: str) -> InstalledModel | None:
        return self._models.pop(canonical_name(name).lower(), None)

    def newest_first(self) -> list[InstalledModel]:
        return sorted(self._models.values(), key=lambda m: (-m.modified_at, m.name))

    def __iter__(self) -> Iterator[InstalledModel]:
        return iter(self._models.values())


def details(model: InstalledModel, *, with_lengths: bool) -> dict[str, Any]:
    """The `details` object; /api/tags also carries the trained and embedding lengths (v0.30+)."""
    spec = model.spec
    out: dict[str, Any] = {"parent_model": model.parent, "format": "gguf", "family": spec.arch,
                           "families": [spec.arch], "parameter_size": spec.parameter_size,
                           "quantization_level": spec.quantization_level}
    if with_lengths:
        out |= {"context_length": spec.context_length, "embedding_length": spec.embedding_length}
    return out


def tags_entry(model: InstalledModel) -> dict[str, Any]:
    return {"name": model.name, "model": model.name, "modified_at": timestamp(model.modified_at),
            "size": model.spec.size, "digest": model.digest, "details": details(model, with_lengths=True),
            "capabilities": model.spec.capabilities}


def model_info(spec: ModelSpec) -> dict[str, Any]:
    arch = spec.arch
    info: dict[str, Any] = {
        "general.architecture": arch,
        "general.parameter_count": spec.parameter_count,
        "general.file_type": 1 if spec.quantization_level == "F16" else 15,
        "general.quantization_version": 2,
        f"{arch}.context_length": spec.context_length,
        f"{arch}.embedding_length": spec.embedding_length,
        f"{arch}.block_count": 12 if spec.embedding else 28,
        f"{arch}.attention.head_count": 12 if spec.embedding else 24,
        "tokenizer.ggml.model": "bert" if spec.embedding else "gpt2",
        "tokenizer.ggml.pre": "default" if spec.embedding else "llama-bpe",
    }
    if spec.embedding:
        info[f"{arch}.pooling_type"] = 1
    info.update(spec.tokenizer_info)
    return info


def _brief(value: Any) -> Any:
    """Non-verbose /api/show: arrays longer than 5 elements come back empty."""
    return [] if isinstance(value, list | tuple) and len(value) > 5 else value


def _parameter_lines(parameters: Mapping[str, Any]) -> list[str]:
    lines = []
    for key, value in parameters.items():
        for item in value if isinstance(value, list) else [value]:
            shown = f'"{item}"' if isinstance(item, str) else orjson.dumps(item).decode()
            lines.append(f"{key:<30} {shown}")
    return lines


def show_body(model: InstalledModel, *, verbose: bool) -> dict[str, Any]:
    info = model_info(model.spec)
    if not verbose:
        info = {k: _brief(v) for k, v in info.items()}
    params = _parameter_lines(model.parameters)
    modelfile = "\n".join([
        '# Modelfile generated by "ollama show"',
        "# To build a new Modelfile based on this, replace FROM with:",
        f"# FROM {model.name}", "",
        f"FROM /root/.ollama/models/blobs/sha256-{model.weights}",
        f'TEMPLATE """{model.template}"""',
        *([f'SYSTEM """{model.system}"""'] if model.system else []),
        *(f"PARAMETER {line}" for line in params), ""])
    spec = model.spec
    body: dict[str, Any] = {
        "modelfile": modelfile,
        "parameters": "\n".join(params),
        "template": model.template,
        "details": details(model, with_lengths=False),
        "model_info": info,
        "tensors": [{"name": "token_embd.weight", "type": "Q6_K",
                     "shape": [spec.embedding_length, _VOCAB_SIZE]},
                    {"name": "output_norm.weight", "type": "F32", "shape": [spec.embedding_length]}],
        "capabilities": spec.capabilities,
        "modified_at": timestamp(model.modified_at),
    }
    if model.system:
        body["system"] = model.system
    return body
