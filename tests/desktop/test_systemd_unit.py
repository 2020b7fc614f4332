"""`ollama-proxy install-service` as a user runs it (the real command, a subprocess, into a temporary
XDG_CONFIG_HOME), the unit it writes checked by `systemd-analyze verify --user`, and the config skeleton
read by the proxy's own loader.

`systemd-analyze verify --user` needs no running systemd, only a user runtime directory to set up its
manager in: a private empty one (XDG_RUNTIME_DIR) is given. It exits 0 on unknown keys and bad values
(it only warns about them), so its stderr must be empty too.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ollama_proxy.adapters.systemd.install import ServicePaths
from ollama_proxy.adapters.systemd.notify import ServiceNotifier
from ollama_proxy.adapters.systemd.unit import UNIT_NAME, exec_line
from ollama_proxy.config.load import load_config

SCRIPT = Path(sys.executable).with_name("ollama-proxy")
needs_analyze = pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")


def user_env(home: Path, **extra: str) -> dict[str, str]:
    (home / "run").mkdir(mode=0o700, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("OLLAMA_PROXY_CONFIG", "NOTIFY_SOCKET")}
    return {**env, "XDG_CONFIG_HOME": str(home / "config"), "XDG_RUNTIME_DIR": str(home / "run"), **extra}


def install(home: Path, *args: str, argv: tuple[str, ...] = (sys.executable, "-m", "ollama_proxy"),
            **env: str) -> str:
    done = subprocess.run([*argv, "install-service", *args], capture_output=True, text=True, timeout=60,
                          env=user_env(home, **env))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


def verify(unit: Path, home: Path) -> None:
    done = subprocess.run(["systemd-analyze", "verify", "--user", str(unit)], capture_output=True, text=True,
                          timeout=60, env=user_env(home))
    assert (done.returncode, done.stderr) == (0, ""), done.stderr


def exec_start(unit: Path) -> str:
    return next(line for line in unit.read_text().splitlines() if line.startswith("ExecStart="))


@needs_analyze
def test_the_written_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    out = install(tmp_path)
    unit = tmp_path / "config/systemd/user" / UNIT_NAME
    config = tmp_path / "config/ollama-proxy/config.yaml"
    assert f"Wrote {unit}\nWrote {config} (a skeleton to edit)\n" in out
    assert "No systemd user manager is running here." in out
    assert out.endswith(f"  systemctl --user daemon-reload\n  systemctl --user enable --now {UNIT_NAME}\n")
    verify(unit, tmp_path)
    text = unit.read_text()
    for line in ("Type=notify", "Restart=on-failure", "ExecReload=/bin/kill -HUP $MAINPID", "NoNewPrivileges=yes",
                 "WantedBy=default.target"):
        assert line in text.splitlines()
    # Run as `python -m ollama_proxy`, it names the script installed with that python, not the module.
    assert exec_start(unit) == f"ExecStart={SCRIPT} serve --config {config}"
    assert config.stat().st_mode & 0o777 == 0o600


@needs_analyze
def test_exec_start_quotes_a_path_with_spaces_and_specifiers(tmp_path: Path) -> None:
    """systemd finds the executable only if its path is quoted and `%` escaped as systemd reads them back."""
    odd = tmp_path / "my tools %n ${HOME}"
    odd.mkdir()
    (odd / "ollama-proxy").symlink_to(SCRIPT)
    install(tmp_path, argv=(str(odd / "ollama-proxy"),), XDG_CONFIG_HOME=str(odd / "config"))
    unit = odd / "config/systemd/user" / UNIT_NAME
    # `$` is doubled in arguments (systemd would expand a variable there) but not in the executable's path.
    quoted = str(odd).replace("%", "%%")
    assert exec_start(unit) == (f'ExecStart="{quoted}/ollama-proxy" serve --config '
                                f'"{quoted.replace("$", "$$")}/config/ollama-proxy/config.yaml"')
    verify(unit, tmp_path)


def test_exec_line_words_read_back_as_written() -> None:
    assert exec_line(["/opt/my tools/ollama-proxy", 'say "hi"\n', "50%", "$HOME", ""]) == (
        '"/opt/my tools/ollama-proxy" "say \\"hi\\"\\n" 50%% $$HOME ""')


def test_a_relative_xdg_config_home_is_ignored() -> None:
    assert ServicePaths.for_user({"XDG_CONFIG_HOME": "relative/dir"}).unit == (
        Path.home() / ".config/systemd/user" / UNIT_NAME)


def test_print_writes_nothing(tmp_path: Path) -> None:
    out = install(tmp_path, "--print")
    unit = tmp_path / "config/systemd/user" / UNIT_NAME
    assert out.startswith(f"# {unit} (not written: --print)\n")
    assert "\nType=notify\n" in out and f"ExecStart={SCRIPT} serve --config" in out
    assert out.endswith(f"# {tmp_path / 'config/ollama-proxy/config.yaml'} would be written with a skeleton\n")
    assert not (tmp_path / "config").exists()


def test_the_skeleton_loads_and_an_existing_config_is_kept(tmp_path: Path) -> None:
    install(tmp_path)
    config_path = tmp_path / "config/ollama-proxy/config.yaml"
    config = load_config(config_path, environ={})
    assert (config.server.host, config.server.http_port) == ("127.0.0.1", 11435)
    assert [(b.id, b.endpoint) for b in config.backends] == [("local", "http://127.0.0.1:11434")]
    assert config.router.default_mode.value == "balanced"

    config_path.write_text("server: {http_port: 8080}\n")
    out = install(tmp_path)
    assert f"Kept {config_path} (it exists; not overwritten)" in out
    assert config_path.read_text() == "server: {http_port: 8080}\n"


def test_a_running_user_manager_is_told_to_reload(tmp_path: Path) -> None:
    """A stand-in systemctl (first on PATH) and the user manager's private socket, which is how a
    running one is recognised."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "systemctl.calls"
    (bin_dir / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "systemctl").chmod(0o755)
    (tmp_path / "run/systemd").mkdir(parents=True, mode=0o700)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as manager:
        manager.bind(str(tmp_path / "run/systemd/private"))
        out = install(tmp_path, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert calls.read_text() == "--user daemon-reload\n"
    assert out.endswith("Reloaded the user manager (systemctl --user daemon-reload).\n"
                        f"Start it now and at every login:\n  systemctl --user enable --now {UNIT_NAME}\n")


def test_notifications_reach_an_abstract_socket() -> None:
    name = f"ollama-proxy-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind("\0" + name)
        manager.settimeout(5)
        environ = {"NOTIFY_SOCKET": f"@{name}"}
        notifier = ServiceNotifier.from_environ(environ)
        assert environ == {}  # what the proxy starts does not inherit it
        notifier.stopping()
        assert manager.recv(4096).split(b"\n")[0] == b"STOPPING=1"


def test_no_notify_socket_means_no_notifications(caplog: pytest.LogCaptureFixture) -> None:
    ServiceNotifier.from_environ({}).ready("serving")
    ServiceNotifier(f"/nonexistent/{os.getpid()}/notify").ready("serving")  # logged, not raised
    assert "could not notify the service manager (READY=1)" in caplog.text
