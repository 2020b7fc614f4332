"""The extension's fast checks: both builds parse, and the shared logic drives a D-Bus stand-in over a
private session bus."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXTENSION = Path(__file__).parents[2] / "src/ollama_proxy/adapters/gnome/extension"
HERE = Path(__file__).parent

pytestmark = pytest.mark.skipif(not shutil.which("gjs"), reason="gjs is not installed")


@pytest.mark.parametrize("name", ["logic.js", "view.js", "shell43/extension.js"])
def test_legacy_scripts_parse(name: str) -> None:
    source = json.dumps((EXTENSION / name).read_text())
    done = subprocess.run(["gjs", "-c", f"new Function({source})"], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(not shutil.which("node"), reason="node is not installed")
def test_module_build_parses(tmp_path: Path) -> None:
    module = tmp_path / "extension.mjs"
    module.write_text((EXTENSION / "shell45/extension.js").read_text())
    done = subprocess.run(["node", "--check", str(module)], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr


def test_metadata_lists_each_build_its_own_shells() -> None:
    old = json.loads((EXTENSION / "shell43/metadata.json").read_text())
    new = json.loads((EXTENSION / "shell45/metadata.json").read_text())
    assert old["uuid"] == new["uuid"] == "ai-efficiency@ollama-proxy.fio.ie"
    assert old["shell-version"] == ["43", "44"]
    assert all(int(v) >= 45 for v in new["shell-version"])


@pytest.mark.skipif(not shutil.which("dbus-run-session"), reason="dbus-run-session is not installed")
def test_logic_follows_and_sets_the_mode() -> None:
    script = (f"{sys.executable} {HERE / 'standin.py'} > standin.log & STANDIN=$!; "
              "for i in $(seq 100); do grep -q ready standin.log 2>/dev/null && break; sleep 0.05; done; "
              f"gjs {HERE / 'logic_check.js'} {EXTENSION / 'logic.js'}; cat standin.log >&2; kill $STANDIN")
    done = subprocess.run(["dbus-run-session", "--", "sh", "-c", script], capture_output=True, text=True,
                          timeout=30, cwd=_scratch())
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["absent"][0] == "Proxy not running"
    assert seen["modes"][:2] == ["performance", "balanced"]
    assert ["balanced · npu", False] in seen["states"]
    assert ["quiet · npu", True] in seen["states"]
    assert "SetMode quiet" in done.stderr


def _scratch() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="gnome-ext-")
