"""Installs the "AI Efficiency" extension build that fits the running GNOME Shell into the user's extensions."""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import TextIO

UUID = "ai-efficiency@ollama-proxy.fio.ie"
SHARED_FILES = ("logic.js", "view.js")
# Shell 45 moved extensions to ES modules, which 43-44 cannot load; the two builds split there.
FIRST_MODULE_SHELL = 45
OLDEST_SHELL = 43


class InstallError(Exception):
    """The extension cannot be installed as asked (no shell found, a version too old)."""


def detect_shell_version() -> str:
    try:
        out = subprocess.run(["gnome-shell", "--version"], capture_output=True, text=True, timeout=10,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise InstallError(f"cannot run 'gnome-shell --version' ({exc}); pass --shell-version") from exc
    match = re.search(r"(\d+)(?:\.\S*)?", out)
    if not match:
        raise InstallError(f"cannot read a version in {out.strip()!r}; pass --shell-version")
    return match.group(1)


def build_for(shell_version: str) -> str:
    try:
        major = int(shell_version.split(".")[0])
    except ValueError as exc:
        raise InstallError(f"shell version {shell_version!r} is not a number such as 43 or 46") from exc
    if major < OLDEST_SHELL:
        raise InstallError(f"GNOME Shell {major} has no Quick Settings; the extension needs {OLDEST_SHELL} or later")
    return "shell45" if major >= FIRST_MODULE_SHELL else "shell43"


def install(shell_version: str, extensions_dir: Path, out: TextIO, *, dry_run: bool = False) -> Path:
    build = build_for(shell_version)
    source = resources.files("ollama_proxy.adapters.gnome") / "extension"
    target = extensions_dir / UUID
    names = [f"{build}/{name}" for name in ("extension.js", "metadata.json")]
    names += list(SHARED_FILES)
    if dry_run:
        print(f"would install the GNOME Shell {shell_version} build into {target}:", file=out)
        for name in names:
            print(f"  {name}", file=out)
        return target
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in names:
        (target / Path(name).name).write_bytes(source.joinpath(*name.split("/")).read_bytes())
    print(f"Installed the AI Efficiency extension (GNOME Shell {shell_version} build) into {target}.", file=out)
    print(f"Enable it with:  gnome-extensions enable {UUID}", file=out)
    print("On Wayland, log out and back in first so the shell sees the new extension "
          "(on X11, Alt+F2 r reloads it).", file=out)
    return target
