"""The configuration schema: every setting, its default and its bounds, in one place.

Pure: no file, environment or network access. `load.py` merges YAML, environment and
flags into a dict and validates it here. Unknown keys are rejected everywhere so that a
typo never silently falls back to a default.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ollama_proxy.core.modes import EfficiencyMode

Port = Annotated[int, Field(ge=0, le=65535)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    http_port: Port = 11435
    grpc_port: Port = 50051
    # Opt-in: a desktop proxy should not open a second port nobody asked for, and 50051 is every gRPC
    # dev server's default, so a default-on listener would make the proxy fail to start for people
    # who never use gRPC.
    grpc_enabled: bool = False
    # JSON bodies above this are refused with 413; blob uploads stream and are not held, so not limited.
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # Empty: no authentication (the default on loopback). Otherwise clients send
    # `Authorization: Bearer <key>` or `X-API-Key: <key>`.
    api_keys: tuple[str, ...] = ()
    # Ollama answers 403 to foreign Origins; the proxy strips Origin before forwarding and
    # answers CORS itself for these origins ("*" allows all).
    cors_origins: tuple[str, ...] = ("http://localhost", "http://127.0.0.1", "https://localhost",
                                    "https://127.0.0.1")
    # A client must send a request's headers (and a JSON body) within this long once it starts:
    # slow-sending connections are closed, not held (nginx: client_header_timeout 60 s).
    header_timeout_s: float = Field(default=30.0, gt=0)
    # An idle keep-alive connection is closed after this long (nginx's keepalive_timeout).
    keepalive_timeout_s: float = Field(default=75.0, gt=0)
    # Open client connections at most; one more is answered 503 and closed.
    max_connections: int = Field(default=2048, ge=1)
    # On SIGTERM/SIGINT: stop accepting, let in-flight requests and streams finish this long, then cut.
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    # "json": one JSON object per log line, for log collectors (`--log-format json`).
    log_format: Literal["text", "json"] = "text"
    # How backends are reached: "raw" (pooled keep-alive connections, llhttp parsing; https backends
    # still go through aiohttp's client) or "aiohttp" (aiohttp's client for every backend).
    upstream_client: Literal["raw", "aiohttp"] = "raw"
    # "fast": inference and passthrough paths on the llhttp front (adapters.fast), the rest handed to
    # aiohttp on the same port; "aiohttp": every path on aiohttp's server.
    engine: Literal["fast", "aiohttp"] = "fast"

    def __repr__(self) -> str:
        keys = f"<{len(self.api_keys)} keys>" if self.api_keys else "()"
        return f"ServerConfig(host={self.host!r}, http_port={self.http_port}, api_keys={keys})"


class QueueConfig(_Strict):
    max_length: int = Field(default=256, ge=0)
    max_wait_ms: int = Field(default=120_000, ge=1)
    # A reserved slot lets `critical` requests start even when a backend is at max_concurrent.
    reserve_critical: bool = True
    # A waiting request gains one priority level per this many milliseconds, so best-effort work
    # cannot starve behind a steady stream of higher priorities.
    ageing_ms: int = Field(default=10_000, ge=1)


class RouterConfig(_Strict):
    power_aware: bool = True
    auto_optimize: bool = True
    default_mode: EfficiencyMode = EfficiencyMode.BALANCED
    # Management calls (pull, push, create, copy, delete) go here when no X-Target-Backend is given.
    default_backend: str | None = None
    max_failover: int = Field(default=2, ge=0, le=10)
    health_interval_s: float = Field(default=5.0, gt=0)
    discovery_interval_s: float = Field(default=15.0, gt=0)
    breaker_failures: int = Field(default=3, ge=1)
    breaker_reset_s: float = Field(default=10.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    # From the end of sending to the response headers. Ollama sends them once the model is loaded
    # and the prompt evaluated (and a non-streamed reply only when it is complete); its own load
    # stall timeout (OLLAMA_LOAD_TIMEOUT) is 5 minutes. On expiry the request fails over.
    first_byte_timeout_s: float = Field(default=300.0, gt=0)
    # Silence in the middle of a reply (between two pieces of a stream); the stream then ends with
    # an error line. Tokens arrive every few tens of milliseconds even on a CPU.
    idle_timeout_s: float = Field(default=120.0, gt=0)
    # Ultra-efficiency serves only on backends within this power (an explicit target is served over
    # it with a warning header); nothing within it: 503 naming the cap.
    ultra_efficiency_max_watts: float = Field(default=10.0, gt=0)
    queue: QueueConfig = QueueConfig()


class DefaultRoute(StrEnum):
    PASSTHROUGH = "passthrough"
    AUTO = "auto"


class ContextConfig(_Strict):
    # Past 32K for agents (Ollama's Claude Code guide asks for 64K); each is clamped to the model's trained length.
    sizes: tuple[int, ...] = (2048, 4096, 8192, 16384, 32768, 65536, 131072)
    # Bare paths (no /proxy-context/ prefix) are sized too, unless the client set options.num_ctx itself.
    default_route: DefaultRoute = DefaultRoute.AUTO
    system_overhead_tokens: int = Field(default=100, ge=0)
    safety_margin_tokens: int = Field(default=200, ge=0)
    default_reply_tokens: int = Field(default=1024, ge=0)
    # Ollama evaluating fewer than this share of the tokens we counted means it truncated.
    truncation_ratio: float = Field(default=0.9, gt=0, le=1)
    # Fetch the model's own tokenizer from /api/show (verbose) for exact counts.
    exact_tokenizer: bool = True

    @field_validator("sizes")
    @classmethod
    def _sizes_sorted_positive(cls, sizes: tuple[int, ...]) -> tuple[int, ...]:
        if not sizes:
            raise ValueError("must list at least one context size")
        if any(s < 256 or s > 1_048_576 for s in sizes):
            raise ValueError("each size must be between 256 and 1048576 tokens")
        return tuple(sorted(set(sizes)))


class SystemConfig(_Strict):
    sysfs_root: str = "/sys"
    nvidia_smi: str = "nvidia-smi"
    poll_interval_s: float = Field(default=5.0, gt=0)
    battery_low_percent: float = Field(default=20.0, ge=0, le=100)
    hot_celsius: float = Field(default=80.0, gt=0)
    cool_celsius: float = Field(default=70.0, gt=0)
    fan_high_rpm: float = Field(default=4000.0, gt=0)
    min_dwell_s: float = Field(default=10.0, ge=0, le=10.0)


class DesktopConfig(_Strict):
    # The D-Bus front on the session bus. auto: when DBUS_SESSION_BUS_ADDRESS names a bus that answers.
    dbus: Literal["auto", "on", "off"] = "auto"
    # Desktop notifications (org.freedesktop.Notifications) on thermal events and auto mode switches.
    notifications: bool = True

    @field_validator("dbus", mode="before")
    @classmethod
    def _yaml_switch(cls, value: object) -> object:
        # YAML 1.1 (PyYAML) reads a bare `on`/`off` as a boolean.
        return ("on" if value else "off") if isinstance(value, bool) else value


class Hardware(StrEnum):
    NPU = "npu"
    IGPU = "igpu"
    NVIDIA = "nvidia"
    CPU = "cpu"
    OTHER = "other"


class Characteristics(_Strict):
    power_watts: float = Field(default=15.0, ge=0)
    avg_latency_ms: float = Field(default=1000.0, ge=0)
    priority: int = Field(default=1, ge=0, le=100)
    max_concurrent: int = Field(default=4, ge=1, le=1024)


class BackendConfig(_Strict):
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    type: Literal["ollama", "openai"] = "ollama"
    name: str = ""
    hardware: Hardware = Hardware.OTHER
    enabled: bool = True
    endpoint: str
    # Sent as `Authorization: Bearer` to OpenAI-type backends that want one.
    api_key: str | None = None
    characteristics: Characteristics = Characteristics()

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, endpoint: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s) URL such as http://127.0.0.1:11434, got {endpoint!r}")
        try:
            parts.port  # noqa: B018 - raises ValueError for an out-of-range port
        except ValueError as exc:
            raise ValueError(f"bad port in {endpoint!r}") from exc
        return endpoint.rstrip("/")

    def __repr__(self) -> str:
        return f"BackendConfig(id={self.id!r}, type={self.type!r}, endpoint={self.endpoint!r})"


class Config(_Strict):
    server: ServerConfig = ServerConfig()
    router: RouterConfig = RouterConfig()
    context: ContextConfig = ContextConfig()
    system: SystemConfig = SystemConfig()
    desktop: DesktopConfig = DesktopConfig()
    backends: tuple[BackendConfig, ...] = ()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _backends_consistent(self) -> Config:
        seen: set[str] = set()
        for backend in self.backends:
            if backend.id in seen:
                raise ValueError(f"duplicate backend id {backend.id!r}")
            seen.add(backend.id)
        default = self.router.default_backend
        if default is not None and default not in seen:
            raise ValueError(f"router.default_backend {default!r} is not a configured backend id "
                             f"(configured: {', '.join(sorted(seen)) or 'none'})")
        return self

    def backend(self, backend_id: str) -> BackendConfig | None:
        return next((b for b in self.backends if b.id == backend_id), None)
