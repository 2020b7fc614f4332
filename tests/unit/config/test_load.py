from __future__ import annotations

from pathlib import Path

import pytest

from ollama_proxy.config.load import load_config
from ollama_proxy.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proxy.yaml"
    path.write_text(text)
    return path


def test_defaults_make_one_backend_from_host_and_port() -> None:
    config = load_config(environ={}, overrides={"ollama_host": "10.0.0.5", "ollama_port": 11500})
    assert [b.endpoint for b in config.backends] == ["http://10.0.0.5:11500"]
    assert config.server.host == "127.0.0.1"
    assert config.server.http_port == 11435


def test_environment_base_url_when_no_flags() -> None:
    config = load_config(environ={"OLLAMA_BASE_URL": "http://gpu-box:11434/"})
    assert config.backends[0].endpoint == "http://gpu-box:11434"
    assert config.backends[0].id == "default"


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    path = write(tmp_path, "server: {http_port: 9000, host: 127.0.0.2}\nlog_level: WARNING\n")
    config = load_config(path, environ={}, overrides={"proxy_port": 9100})
    assert config.server.http_port == 9100
    assert config.server.host == "127.0.0.2"
    assert config.log_level == "WARNING"
    env_path = load_config(environ={"OLLAMA_PROXY_CONFIG": str(path)})
    assert env_path.server.http_port == 9000


def test_full_schema_from_the_issue(tmp_path: Path) -> None:
    path = write(tmp_path, """
server:  {host: 127.0.0.1, http_port: 11435, grpc_port: 50051}
router:  {power_aware: true, auto_optimize: true, default_mode: balanced}
context: {sizes: [4096, 2048, 8192], default_route: auto, system_overhead_tokens: 100,
          safety_margin_tokens: 200, default_reply_tokens: 1024}
backends:
  - id: ollama-npu
    type: ollama
    name: "Ollama NPU"
    hardware: npu
    enabled: true
    endpoint: "http://localhost:11434"
    characteristics: {power_watts: 3.0, avg_latency_ms: 800, priority: 3, max_concurrent: 4}
""")
    config = load_config(path, environ={})
    assert config.context.sizes == (2048, 4096, 8192)
    assert config.backends[0].characteristics.power_watts == 3.0
    assert config.backends[0].hardware == "npu"


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("server: {http_port: 70000}", "server.http_port", id="port-range"),
    pytest.param("server: {htp_port: 1}", "server.htp_port: unknown key", id="unknown-key"),
    pytest.param("backends: [{id: a, endpoint: 'ftp://x'}]", "backends[0].endpoint", id="bad-url"),
    pytest.param("backends: [{id: a, endpoint: 'http://x'}, {id: a, endpoint: 'http://y'}]",
                 "duplicate backend id 'a'", id="duplicate-id"),
    pytest.param("router: {default_mode: turbo}", "router.default_mode", id="unknown-mode"),
    pytest.param("context: {sizes: []}", "context.sizes", id="no-sizes"),
    pytest.param("router: {default_backend: nope}\nbackends: [{id: a, endpoint: 'http://x'}]",
                 "router.default_backend 'nope'", id="unknown-default-backend"),
    pytest.param("server: [1, 2", "YAML syntax error at line", id="yaml-syntax"),
    pytest.param("- just a list", "expected a mapping", id="not-a-mapping"),
])
def test_bad_config_names_the_field(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    assert expected in str(info.value)


def test_bad_value_message_shows_the_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "server: {http_port: 70000}"), environ={})
    assert "70000" in str(info.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml", environ={})


def test_upstream_flag_with_backend_list_is_ambiguous(tmp_path: Path) -> None:
    path = write(tmp_path, "backends: [{id: a, endpoint: 'http://x:1'}]")
    with pytest.raises(ConfigError, match="cannot be combined"):
        load_config(path, environ={}, overrides={"ollama_port": 11434})


def test_api_keys_are_masked_in_repr(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "server: {api_keys: [s3cret]}"), environ={})
    assert "s3cret" not in repr(config.server)


@pytest.mark.parametrize("example", sorted((Path(__file__).parents[3] / "examples").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_examples_are_valid(example: Path) -> None:
    assert load_config(example, environ={}).backends
