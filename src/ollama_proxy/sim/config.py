"""What a simulated Ollama server is made of: hardware profiles, model specs and `SimConfig`.

Plain values only. Nothing here knows about HTTP, the scheduler or the clock; the rest of
`ollama_proxy.sim` reads these objects and never changes them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ollama_proxy.sim.tokenize import approx_token_count

TokenCounter = Callable[[str], int]


@dataclass(frozen=True, slots=True)
class Profile:
    """How fast one kind of hardware is. Every delay is multiplied by `SimConfig.time_scale`."""

    name: str
    load_s: float
    ttft_s: float
    tokens_per_s: float
    prompt_tokens_per_s: float
    # An NPU or GPU holds the whole model in device memory; a CPU holds none (/api/ps size_vram).
    on_device: bool


PROFILES: Mapping[str, Profile] = {
    "npu": Profile("npu", load_s=1.2, ttft_s=0.300, tokens_per_s=15.0, prompt_tokens_per_s=250.0,
                   on_device=True),
    "igpu": Profile("igpu", load_s=0.8, ttft_s=0.150, tokens_per_s=30.0, prompt_tokens_per_s=600.0,
                    on_device=True),
    "nvidia": Profile("nvidia", load_s=0.4, ttft_s=0.040, tokens_per_s=90.0, prompt_tokens_per_s=4000.0,
                      on_device=True),
    "cpu": Profile("cpu", load_s=1.5, ttft_s=0.400, tokens_per_s=8.0, prompt_tokens_per_s=60.0,
                   on_device=False),
}

_KNOWN_ARCH = ("llama", "qwen3", "qwen2", "gemma3", "gemma2", "mistral", "phi3", "granite")
_PARAMS_IN_TAG = re.compile(r"(\d+(?:\.\d+)?)([bm])", re.IGNORECASE)


def canonical_name(name: str) -> str:
    """`llama3.2` -> `llama3.2:latest`, as Ollama displays names (the tag defaults to latest)."""
    name = name.strip()
    for prefix in ("registry.ollama.ai/library/", "library/"):
        if name.lower().startswith(prefix):
            name = name[len(prefix):]
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One installed model. `ModelSpec.parse` fills the fields a bare name does not give.

    `context_length` is the trained maximum (`<arch>.context_length`) that caps `num_ctx`;
    `num_ctx` is a Modelfile `PARAMETER num_ctx` (None: the server default, "automatic").
    `tokenizer_info` holds real GGUF `tokenizer.ggml.*` metadata served by verbose /api/show,
    and `tokenize` the counting callable that matches it, so exact counting can be wired end to end.
    """

    name: str
    arch: str
    embedding: bool
    context_length: int
    embedding_length: int
    parameter_size: str
    quantization_level: str = "Q4_K_M"
    num_ctx: int | None = None
    tokenizer_info: Mapping[str, Any] = field(default_factory=dict)
    tokenize: TokenCounter = approx_token_count

    @classmethod
    def parse(cls, text: str, **overrides: Any) -> ModelSpec:
        """Build a spec from `name[:tag][=trained_context]`, e.g. `qwen3:4b=40960`.

        Embedding models are recognised by `embed` in the name (trained context 2048, like
        nomic-embed-text); everything else is a chat model trained for 131072 tokens.
        """
        name, _, ctx = text.partition("=")
        name = canonical_name(name)
        if not name or name.startswith(":"):
            raise ValueError(f"model spec {text!r} has no name")
        base, _, tag = name.rpartition("/")[2].partition(":")
        embedding = "embed" in base.lower()
        arch = "nomic-bert" if embedding else next(
            (a for a in _KNOWN_ARCH if base.lower().startswith(a)), "llama")
        params = _PARAMS_IN_TAG.fullmatch(tag)
        size = (f"{float(params[1]):.1f}{params[2].upper()}" if params
                else "137M" if embedding else "3.2B")
        fields: dict[str, Any] = {
            "name": name, "arch": arch, "embedding": embedding,
            "context_length": 2048 if embedding else 131072,
            "embedding_length": 768 if embedding else 3072,
            "parameter_size": size, "quantization_level": "F16" if embedding else "Q4_K_M",
        }
        if ctx:
            try:
                fields["context_length"] = int(ctx)
            except ValueError:
                raise ValueError(f"model spec {text!r}: trained context {ctx!r} is not an integer") from None
        fields.update(overrides)
        return cls(**fields)

    @property
    def parameter_count(self) -> int:
        number, unit = float(self.parameter_size[:-1]), self.parameter_size[-1]
        return int(number * (1e9 if unit == "B" else 1e6))

    @property
    def size(self) -> int:
        """Bytes on disk: F16 is 2 bytes a weight, Q4_K_M about 0.6."""
        return int(self.parameter_count * (2.0 if self.quantization_level == "F16" else 0.6))

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"manifest:{self.name}".encode()).hexdigest()

    @property
    def capabilities(self) -> list[str]:
        return ["embedding"] if self.embedding else ["completion", "tools"]


@dataclass(slots=True)
class SimConfig:
    """Settings of one simulated Ollama server.

    `time_scale` multiplies every modelled delay (load, first token, token pacing): 0 makes the
    server instant, 0.01 a hundred times faster than the profile. Reported `*_duration` values are
    always the modelled, unscaled ones, so metrics look real even at 0.
    """

    models: Sequence[str | ModelSpec] = ("llama3.2", "qwen3:4b", "nomic-embed-text")
    profile: str = "cpu"
    time_scale: float = 1.0
    seed: int = 0
    # OLLAMA_MAX_QUEUE: requests waiting for a model load beyond this get 503.
    max_queue: int = 512
    # OLLAMA_NUM_PARALLEL: slots per loaded chat model (embedding models always get 1).
    num_parallel: int = 1
    max_loaded_models: int = 3
    # The VRAM-tier default for small machines, used when nothing sets num_ctx.
    default_num_ctx: int = 4096
    keep_alive_s: float = 300.0
    version: str = "0.33.0-rc2"
    # Names /api/pull can fetch; None means any name.
    pullable: Collection[str] | None = None
    # How long a natural reply runs (tokens, inclusive range) before the model stops by itself;
    # benchmarks raise it to get long streams.
    reply_tokens: tuple[int, int] = (5, 40)

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; choose one of {', '.join(PROFILES)}")
        if self.time_scale < 0:
            raise ValueError(f"time_scale must be >= 0, got {self.time_scale}")
        if not 1 <= self.reply_tokens[0] <= self.reply_tokens[1]:
            raise ValueError(f"reply_tokens must be a range MIN,MAX with 1 <= MIN <= MAX, got {self.reply_tokens}")
        for name, value in (("max_queue", self.max_queue), ("num_parallel", self.num_parallel),
                            ("max_loaded_models", self.max_loaded_models),
                            ("default_num_ctx", self.default_num_ctx)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")

    @property
    def hardware(self) -> Profile:
        return PROFILES[self.profile]

    def model_specs(self) -> list[ModelSpec]:
        return [m if isinstance(m, ModelSpec) else ModelSpec.parse(m) for m in self.models]
