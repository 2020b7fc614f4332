from __future__ import annotations

from pathlib import Path

import pytest

from ollama_proxy.config.load import load_config, proxy_url
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


@pytest.mark.parametrize(("written", "endpoint"), [
    pytest.param("gpu-box", "http://gpu-box:11434", id="host"),
    pytest.param("127.0.0.1:22434", "http://127.0.0.1:22434", id="host:port"),
    pytest.param("[fd00::5]:9000", "http://[fd00::5]:9000", id="[v6]:port"),
    pytest.param("::1", "http://[::1]:11434", id="bare-v6"),
    pytest.param("http://gpu-box:9000", "http://gpu-box:9000", id="url"),
    pytest.param("https://gpu-box/ollama", "https://gpu-box/ollama", id="url-default-port-and-path"),
    pytest.param("http://gpu-box", "http://gpu-box", id="url-port-80-as-ollama-reads-it"),
    pytest.param(":11500", "http://127.0.0.1:11500", id="port-only"),
])
def test_ollama_host_is_read_as_ollama_host_is_written(written: str, endpoint: str) -> None:
    assert load_config(environ={}, overrides={"ollama_host": written}).backends[0].endpoint == endpoint
    assert load_config(environ={"OLLAMA_BASE_URL": written}).backends[0].endpoint == endpoint


@pytest.mark.parametrize("written", ["gpu-box:port", "gpu-box:0", "gpu-box:70000", "[::1", "[::1]x", "ftp://x"])
def test_bad_ollama_host_names_the_flag_and_the_value_once(written: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ={}, overrides={"ollama_host": written})
    message = str(info.value)
    assert message.startswith("--ollama-host: ") and message.count(repr(written)) == 1


def test_port_flag_keeps_the_host_from_the_environment() -> None:
    config = load_config(environ={"OLLAMA_BASE_URL": "http://gpu-box:9999"}, overrides={"ollama_port": 11434})
    assert config.backends[0].endpoint == "http://gpu-box:11434"
    assert load_config(environ={"OLLAMA_BASE_URL": "https://u:p@[fd00::5]:1/x"},
                       overrides={"ollama_port": 2}).backends[0].endpoint == "https://u:p@[fd00::5]:2/x"


def test_host_flag_beats_the_environment_and_port_flag_beats_both() -> None:
    env = {"OLLAMA_BASE_URL": "http://gpu-box:9999"}
    assert load_config(environ=env, overrides={"ollama_host": "other"}).backends[0].endpoint == "http://other:11434"
    assert load_config(environ=env, overrides={"ollama_host": "other:1", "ollama_port": 2}) \
        .backends[0].endpoint == "http://other:2"


def test_empty_base_url_counts_as_unset() -> None:
    assert load_config(environ={"OLLAMA_BASE_URL": ""}).backends[0].endpoint == "http://127.0.0.1:11434"


def test_base_url_replaces_the_sole_backends_endpoint_in_a_file(tmp_path: Path) -> None:
    path = write(tmp_path, "backends: [{id: a, name: A, endpoint: 'http://x:1', characteristics: {priority: 7}}]")
    config = load_config(path, environ={"OLLAMA_BASE_URL": "http://ollama:11434"})
    (only,) = config.backends
    assert (only.id, only.name, only.endpoint, only.characteristics.priority) == ("a", "A", "http://ollama:11434", 7)
    # A port flag alone keeps the file's host.
    assert load_config(path, environ={}, overrides={"ollama_port": 2}).backends[0].endpoint == "http://x:2"


def test_base_url_replaces_the_default_backends_endpoint(tmp_path: Path) -> None:
    path = write(tmp_path, "router: {default_backend: b}\n"
                           "backends: [{id: a, endpoint: 'http://x:1'}, {id: b, endpoint: 'http://y:2'}]")
    config = load_config(path, environ={"OLLAMA_BASE_URL": "gpu-box:3"})
    assert [b.endpoint for b in config.backends] == ["http://x:1", "http://gpu-box:3"]


def test_base_url_with_several_backends_and_no_default_says_how_to_choose(tmp_path: Path) -> None:
    path = write(tmp_path, "backends: [{id: a, endpoint: 'http://x:1'}, {id: b, endpoint: 'http://y:2'}]")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"OLLAMA_BASE_URL": "http://ollama:11434"})
    message = str(info.value)
    assert "OLLAMA_BASE_URL" in message and "(a, b)" in message and "router.default_backend" in message
    with pytest.raises(ConfigError, match="--ollama-port would replace"):
        load_config(path, environ={}, overrides={"ollama_port": 1})
    # Without an upstream setting the file is used as written.
    assert len(load_config(path, environ={"OLLAMA_BASE_URL": ""}).backends) == 2


def test_a_validators_message_quotes_the_value_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "backends: [{id: a, endpoint: 'ftp://x'}]"), environ={})
    assert str(info.value).count("'ftp://x'") == 1


def test_listen_flags_reach_the_config(tmp_path: Path) -> None:
    path = write(tmp_path, "server: {log_format: json, host: 127.0.0.2}")
    assert load_config(path, environ={}).server.log_format == "json"
    config = load_config(path, environ={}, overrides={"log_format": "text", "host": "127.0.0.3"})
    assert (config.server.log_format, config.server.host) == ("text", "127.0.0.3")
    with pytest.raises(ConfigError, match=r"server\.log_format"):
        load_config(write(tmp_path, "server: {log_format: xml}"), environ={})


@pytest.mark.parametrize(("server", "url"), [
    pytest.param("{}", "http://127.0.0.1:11435", id="defaults"),
    pytest.param("{host: 0.0.0.0, http_port: 9000}", "http://127.0.0.1:9000", id="every-interface"),
    pytest.param("{host: '::', http_port: 9001}", "http://[::1]:9001", id="every-v6-interface"),
    pytest.param("{host: 127.0.0.2}", "http://127.0.0.2:11435", id="address"),
])
def test_proxy_url_is_where_the_config_listens(tmp_path: Path, server: str, url: str) -> None:
    path = write(tmp_path, f"server: {server}\nbackends: [{{id: a, endpoint: 'http://x:1'}}]")
    assert proxy_url(path, environ={}) == url
    assert proxy_url(environ={"OLLAMA_PROXY_CONFIG": str(path)}) == url


def test_proxy_url_from_the_environment_first(tmp_path: Path) -> None:
    path = write(tmp_path, "server: {http_port: 9000}")
    assert proxy_url(path, environ={"OLLAMA_PROXY_URL": "gpu-box"}) == "http://gpu-box:11435"
    assert proxy_url(environ={"OLLAMA_PROXY_URL": "https://proxy.lan/"}) == "https://proxy.lan/"
    assert proxy_url(environ={}) == "http://127.0.0.1:11435"


def test_api_keys_are_masked_in_repr(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "server: {api_keys: [s3cret]}"), environ={})
    assert "s3cret" not in repr(config.server)


@pytest.mark.parametrize("example", sorted((Path(__file__).parents[3] / "examples").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_examples_are_valid(example: Path) -> None:
    assert load_config(example, environ={}).backends
