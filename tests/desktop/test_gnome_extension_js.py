"""The extension's fast checks, without a shell: both builds parse, and the shared logic follows and sets the mode
of the real proxy (its D-Bus front on a private session bus)."""

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from .shell.proxy import efficiency, start_proxy, wait_for_proxy
from .shell.session import Processes, ShellBus, start_session_bus, throwaway_env

EXTENSION = Path(__file__).parents[2] / "src/ollama_proxy/adapters/gnome/extension"
HERE = Path(__file__).parent

pytestmark = pytest.mark.skipif(not shutil.which("gjs"), reason="gjs is not installed")


@pytest.mark.parametrize("name", ["logic.js", "view.js", "shell43/extension.js"])
def test_legacy_scripts_parse(name: str) -> None:
    source = json.dumps((EXTENSION / name).read_text())
    done = subprocess.run(["gjs", "-c", f"new Function({source})"], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr


def test_module_build_parses() -> None:
    done = subprocess.run(["gjs", "-m", str(HERE / "module_check.js"), str(EXTENSION / "shell45/extension.js")],
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ImportError" in done.stdout, done.stdout  # it parsed, and got as far as the shell's own modules


def test_metadata_lists_each_build_its_own_shells() -> None:
    old = json.loads((EXTENSION / "shell43/metadata.json").read_text())
    new = json.loads((EXTENSION / "shell45/metadata.json").read_text())
    assert old["uuid"] == new["uuid"] == "ai-efficiency@ollama-proxy.fio.ie"
    assert old["shell-version"] == ["43", "44"]
    assert all(int(v) >= 45 for v in new["shell-version"])


@pytest.mark.skipif(not shutil.which("dbus-run-session"), reason="dbus-run-session is not installed")
async def test_logic_follows_and_sets_the_mode_of_the_real_proxy(tmp_path: Path) -> None:
    with Processes(tmp_path) as processes:
        env = start_session_bus(processes, throwaway_env(tmp_path))
        url, proxy = start_proxy(processes, env, tmp_path)
        bus = await ShellBus.connect(env)
        try:
            if why := await wait_for_proxy(url, proxy, bus, tmp_path / "proxy.log"):
                pytest.skip(f"D-Bus front not available ({why})")
        finally:
            bus.bus.disconnect()
        gjs = await asyncio.create_subprocess_exec("gjs", str(HERE / "logic_check.js"), str(EXTENSION / "logic.js"),
                                                   env=env, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(gjs.communicate(), 20)
        assert gjs.returncode == 0, err.decode()
        seen = json.loads(out.decode().strip().splitlines()[-1])
        assert seen["absent"][0] == "Proxy not running"
        assert seen["modes"] == (await efficiency(url))["modes"]
        # No request routed yet, so no backend in the text. Each change shows once or more (ModeChanged, then
        # PropertiesChanged): quiet, then the toggle's two clicks, to balanced and back to the last other mode.
        changes = [state for i, state in enumerate(seen["states"]) if i == 0 or state != seen["states"][i - 1]]
        balanced, saver = "power-profile-balanced-symbolic", "power-profile-power-saver-symbolic"
        assert changes == [["balanced", False, balanced], ["quiet", True, saver], ["balanced", False, balanced],
                           ["quiet", True, saver]]
        assert (await efficiency(url))["mode"] == "quiet"
