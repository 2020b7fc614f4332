"""The image and compose file, checked without a Docker daemon: the Dockerfile's instructions, the argument
vectors its entrypoint is run with (through the real parser and configuration), compose.yaml's services.

The HEALTHCHECK command itself runs against a live proxy in tests/integration/test_status_command.py.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import yaml

from ollama_proxy.cli import command_config, parse_args

ROOT = Path(__file__).parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", "\n".join(line for line in DOCKERFILE.splitlines()
                                               if not line.lstrip().startswith("#")))
    return [(parts[0].upper(), parts[1].strip()) for line in joined.splitlines() if line.strip()
            for parts in [line.strip().split(None, 1)]]


def instruction(name: str) -> list[str]:
    return [args for instr, args in instructions() if instr == name]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in instruction("ENV"):
        env.update(pair.split("=", 1) for pair in shlex.split(args))
    return env


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def healthcheck_command() -> list[str]:
    (args,) = instruction("HEALTHCHECK")
    return exec_form(args[args.index("CMD") + 3:].strip())


def documented_runs() -> list[list[str]]:
    """The arguments after the image name in every `docker run ... ollama-proxy ARGS` line the Dockerfile
    and the README document."""
    readme = (ROOT / "README.md").read_text()
    runs = []
    for line in (DOCKERFILE + readme).splitlines():
        match = re.search(r"docker run (.*)", line)
        if match:
            words = shlex.split(match.group(1).split("#")[0])
            image = next(i for i, w in enumerate(words) if w in ("ollama-proxy", "ollama-proxy:latest"))
            runs.append(words[image + 1:])
    return runs


def test_image_points_at_the_ollama_service_by_default() -> None:
    assert image_env()["OLLAMA_BASE_URL"] == "http://ollama:11434"
    assert image_env()["PYTHONUNBUFFERED"] == "1"  # log lines reach `docker logs` as written


def test_image_runs_as_the_non_root_user_it_creates() -> None:
    (user,) = instruction("USER")
    assert user.isdigit() and int(user) != 0
    assert any(f"useradd --system --uid {user} " in run for run in instruction("RUN"))
    # The user is switched to after installing and before anything runs.
    names = [name for name, _ in instructions()]
    assert names.index("USER") > names.index("RUN") and names.index("USER") < names.index("ENTRYPOINT")


def test_healthcheck_asks_health_with_python_not_curl() -> None:
    command = healthcheck_command()
    assert command[:2] == ["python", "-c"]
    assert "/health" in command[2] and "urllib.request" in command[2]
    compile(command[2], "<healthcheck>", "exec")
    (args,) = instruction("HEALTHCHECK")
    assert re.search(r"--timeout=\d+s", args) and re.search(r"--interval=\d+s", args)


def test_default_command_serves_every_interface_in_front_of_the_ollama_service() -> None:
    assert exec_form(instruction("ENTRYPOINT")[0]) == ["ollama-proxy"]
    args = parse_args(exec_form(instruction("CMD")[0]))
    config = command_config(args, environ=image_env())
    assert args.command == "serve"
    assert (config.server.host, config.server.http_port) == ("0.0.0.0", 11435)
    assert [b.endpoint for b in config.backends] == ["http://ollama:11434"]
    assert f"EXPOSE {config.server.http_port}" in DOCKERFILE


def test_documented_run_lines_parse_and_configure() -> None:
    runs = documented_runs()
    assert ["demo", "--host", "0.0.0.0"] in runs
    for argv in runs:
        args = parse_args(argv or exec_form(instruction("CMD")[0]))
        command_config(args, environ=image_env())


def test_demo_line_listens_on_every_interface() -> None:
    config = command_config(parse_args(["demo", "--host", "0.0.0.0"]), environ=image_env())
    assert (config.server.host, config.server.http_port) == ("0.0.0.0", 11435)
    assert config.backends == ()  # run_demo adds its simulators; OLLAMA_BASE_URL does not apply to it


def test_host_network_line_reaches_ollama_on_the_host() -> None:
    config = command_config(parse_args(["--ollama-host", "127.0.0.1"]), environ=image_env())
    assert [b.endpoint for b in config.backends] == ["http://127.0.0.1:11434"]


def test_compose_runs_ollama_and_the_proxy_with_the_environment_and_a_mounted_config() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert set(compose["services"]) == {"ollama", "proxy"}
    proxy = compose["services"]["proxy"]
    assert proxy["depends_on"] == ["ollama"] and proxy["build"] == "."
    environment = proxy["environment"]
    assert environment["OLLAMA_BASE_URL"] == "http://ollama:11434"
    # The mounted file is the one OLLAMA_PROXY_CONFIG names; read it from the checkout.
    mounted = {target.split(":")[0]: source for source, target in
               (volume.split(":", 1) for volume in proxy["volumes"])}
    local = ROOT / mounted[environment["OLLAMA_PROXY_CONFIG"]]
    assert local.is_file()
    env = image_env() | environment | {"OLLAMA_PROXY_CONFIG": str(local), "OLLAMA_BASE_URL": "http://ollama:9"}
    argv = proxy.get("command") or exec_form(instruction("CMD")[0])
    config = command_config(parse_args(argv), environ=env)
    assert [b.endpoint for b in config.backends] == ["http://ollama:9"]  # the environment beats the file
    assert config.server.host == "0.0.0.0"
    published = proxy["ports"][0]
    assert published.startswith("127.0.0.1:") and published.endswith(f":{config.server.http_port}")
