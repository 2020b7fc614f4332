"""`ollama-proxy install-service`: the user unit and a config skeleton written where a user's systemd
and the proxy look for them, and the user manager told to read the unit again when one is running."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ollama_proxy.adapters.systemd.skeleton import CONFIG_SKELETON
from ollama_proxy.adapters.systemd.unit import UNIT_NAME, render_unit

SCRIPT = "ollama-proxy"
ENABLE = f"systemctl --user enable --now {UNIT_NAME}"


@dataclass(frozen=True, slots=True)
class ServicePaths:
    unit: Path
    config: Path

    @classmethod
    def for_user(cls, environ: Mapping[str, str]) -> ServicePaths:
        # The XDG spec says to ignore a relative XDG_CONFIG_HOME, as systemd does.
        given = environ.get("XDG_CONFIG_HOME", "")
        config_home = Path(given) if os.path.isabs(given) else Path.home() / ".config"
        return cls(config_home / "systemd/user" / UNIT_NAME, config_home / "ollama-proxy/config.yaml")


def proxy_command(config: Path, argv0: str, python: str) -> list[str]:
    """The command the unit starts: the `ollama-proxy` script being run, else the one installed with this
    interpreter, else the interpreter itself with `-m ollama_proxy`.

    Paths are made absolute but symlinks are kept: a virtualenv's python is a symlink whose target
    knows nothing of the virtualenv, and pipx's ~/.local/bin link survives a reinstall.
    """
    script = argv0 if Path(argv0).name == SCRIPT and os.access(argv0, os.X_OK) else None
    if script is None:
        # Only this interpreter's script directories (its user one, `pip install --user`, outside a
        # virtualenv): another `ollama-proxy` on PATH may be another version.
        dirs = [sysconfig.get_path("scripts")]
        if site.ENABLE_USER_SITE:
            dirs.append(sysconfig.get_path("scripts", f"{os.name}_user"))
        script = shutil.which(SCRIPT, path=os.pathsep.join(dirs))
    start = [os.path.abspath(script)] if script else [os.path.abspath(python), "-m", "ollama_proxy"]
    return [*start, "serve", "--config", str(config)]


def user_systemctl(environ: Mapping[str, str]) -> str | None:
    """systemctl, when a systemd user manager is running for it to talk to (the manager listens on its
    private socket in the user's runtime directory)."""
    runtime = environ.get("XDG_RUNTIME_DIR")
    if not runtime or not Path(runtime, "systemd/private").is_socket():
        return None
    return shutil.which("systemctl", path=environ.get("PATH"))


def install_service(paths: ServicePaths, command: list[str], out: TextIO, *, environ: Mapping[str, str],
                    dry_run: bool = False) -> None:
    """Write the unit (always, so a new install's path replaces an old one) and the config skeleton (only
    when there is none), then reload the user manager; OSError when a file cannot be written."""
    unit = render_unit(command)
    if dry_run:
        print(f"# {paths.unit} (not written: --print)", file=out)
        print(unit, file=out)
        kept = "exists and would be kept" if paths.config.exists() else "would be written with a skeleton"
        print(f"# {paths.config} {kept}", file=out)
        return
    paths.unit.parent.mkdir(parents=True, exist_ok=True)
    partial = paths.unit.with_name(f".{UNIT_NAME}.tmp")
    partial.write_text(unit, encoding="utf-8")
    partial.replace(paths.unit)  # a manager reading the directory meanwhile never sees half a unit
    print(f"Wrote {paths.unit}", file=out)
    if _write_new(paths.config, CONFIG_SKELETON):
        print(f"Wrote {paths.config} (a skeleton to edit)", file=out)
    else:
        print(f"Kept {paths.config} (it exists; not overwritten)", file=out)
    if _reload_manager(environ, out):
        print(f"Start it now and at every login:\n  {ENABLE}", file=out)
    else:
        print(f"When logged in to a session with a systemd user manager, run:\n"
              f"  systemctl --user daemon-reload\n  {ENABLE}", file=out)


def _write_new(path: Path, text: str) -> bool:
    """Create `path` with `text`, readable by its owner only (it may come to hold API keys); False when it
    already exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    return True


def _reload_manager(environ: Mapping[str, str], out: TextIO) -> bool:
    systemctl = user_systemctl(environ)
    if systemctl is None:
        print("No systemd user manager is running here.", file=out)
        return False
    try:
        done = subprocess.run([systemctl, "--user", "daemon-reload"], capture_output=True, text=True,
                              timeout=30, env=dict(environ))
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"systemctl --user daemon-reload failed: {exc}", file=out)
        return False
    if done.returncode != 0:
        print(f"systemctl --user daemon-reload failed: {done.stderr.strip() or done.returncode}", file=out)
        return False
    print("Reloaded the user manager (systemctl --user daemon-reload).", file=out)
    return True
