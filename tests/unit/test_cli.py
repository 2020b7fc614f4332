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
