"""The application layer imports no web, RPC or bus framework: every front can reuse it."""

from __future__ import annotations

import subprocess
import sys

FRAMEWORKS = {"aiohttp", "grpc", "dbus_fast", "websockets", "multidict", "yarl", "httptools"}


def test_service_imports_no_framework() -> None:
    code = (
        "import sys, pkgutil, importlib, ollama_proxy.service as service\n"
        "for m in pkgutil.walk_packages(service.__path__, 'ollama_proxy.service.'):\n"
        "    importlib.import_module(m.name)\n"
        f"print(','.join(sorted(n for n in sys.modules if n.split('.')[0] in {FRAMEWORKS!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
