from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ollama_proxy.cli import main


def test_bad_config_exits_2_with_one_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("server: {http_port: 99999}\n")
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "server.http_port" in err and "99999" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("argv", [["--proxy-port", "0"], ["--proxy-port", "abc"], ["--log-level", "LOUD"],
                                  ["serve", "--ollama-port", "70000"]])
def test_bad_flag_exits_2_naming_it(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert argv[-2] in capsys.readouterr().err


def test_module_entry_point_runs() -> None:
    done = subprocess.run([sys.executable, "-m", "ollama_proxy", "--version"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("ollama-proxy ")


def test_core_imports_no_io_library() -> None:
    code = (
        "import sys, pkgutil, importlib, ollama_proxy.core as core\n"
        "for m in pkgutil.walk_packages(core.__path__, 'ollama_proxy.core.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in "
        "{'aiohttp', 'grpc', 'dbus_fast', 'yaml', 'httpx', 'requests', 'asyncio', 'subprocess', 'socket'})\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_unknown_flag_is_named_with_the_nearest_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--prxy-port", "1"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --prxy-port 1 (did you mean --proxy-port?)" in err
    assert "invalid choice" not in err


@pytest.mark.parametrize(("argv", "named"), [
    (["demo", "--hots", "0.0.0.0"], "--hots"),
    (["status", "--jsn"], "--jsn"),
    (["staus"], "invalid choice: 'staus'"),
    (["--log-format", "xml"], "argument --log-format: invalid choice: 'xml'"),
    (["demo", "--log-format", "xml"], "argument --log-format: invalid choice: 'xml'"),
    (["status", "--recent", "-1"], "argument --recent"),
])
def test_every_command_names_a_bad_flag(argv: list[str], named: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert named in capsys.readouterr().err


def test_help_shows_examples_with_proxy_context_and_status(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["serve", "--help"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert "/proxy-context/auto/api/generate" in out and "ollama-proxy status" in out
        assert "--ollama-host gpu-box:11434" in out and "ollama-proxy demo" in out


def test_bad_upstream_is_one_line_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--ollama-host", "gpu-box:port"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ollama-proxy: configuration error: --ollama-host: ") and err.count("\n") == 1
    assert err.count("'gpu-box:port'") == 1


def test_status_with_a_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("server: {http_port: 99999}\n")
    assert main(["status", "--config", str(path)]) == 2
    assert "server.http_port" in capsys.readouterr().err


def test_status_refuses_a_url_that_is_not_http(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--url", "file:///etc/passwd"]) == 1
    err = capsys.readouterr().err
    assert err == "ollama-proxy status: expected an http(s) URL such as http://127.0.0.1:11435, " \
                  "got 'file:///etc/passwd'\n"
