"""The checked-in generated code is what tools/regenerate_grpc.py makes from proto/ollama_proxy.proto now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
GENERATED = ROOT / "src" / "ollama_proxy" / "adapters" / "grpc" / "generated"


def test_generated_code_is_current(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "tools" / "regenerate_grpc.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    fresh = tmp_path / "ollama_proxy" / "adapters" / "grpc" / "generated"
    names = sorted(p.name for p in fresh.iterdir())
    assert names == ["ollama_proxy_pb2.py", "ollama_proxy_pb2.pyi", "ollama_proxy_pb2_grpc.py",
                     "ollama_proxy_pb2_grpc.pyi"]
    stale = [n for n in names if (GENERATED / n).read_bytes() != (fresh / n).read_bytes()]
    assert not stale, f"{stale} differ from proto/ollama_proxy.proto: run python tools/regenerate_grpc.py"
