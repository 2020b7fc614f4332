"""Regenerate the gRPC front's code from proto/ollama_proxy.proto.

    python tools/regenerate_grpc.py              # into src/ollama_proxy/adapters/grpc/generated/
    python tools/regenerate_grpc.py --out DIR    # into DIR/ollama_proxy/adapters/grpc/generated/ (the CI check)

Messages (`_pb2.py`), the asyncio service (`_pb2_grpc.py`) and typed stubs for both (`.pyi`, from
mypy-protobuf, so `mypy --strict` reads them). The proto is mapped to its package path with a virtual
include root, so the generated modules import each other by their full package name. The output
depends on the generator versions, pinned in pyproject's test extras.
"""

from __future__ import annotations

import argparse
import sys
from importlib.resources import files
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto" / "ollama_proxy.proto"
PACKAGE_PATH = "ollama_proxy/adapters/grpc/generated"


def regenerate(out: Path) -> Path:
    """Write the generated modules under `out` (a source root) and return their folder."""
    target = out / PACKAGE_PATH
    target.mkdir(parents=True, exist_ok=True)
    well_known = files("grpc_tools") / "_proto"  # google/protobuf/struct.proto and friends
    args = ["protoc", f"-I{PACKAGE_PATH}={PROTO.parent}", f"-I{well_known}",
            f"--python_out={out}", f"--grpc_python_out={out}", f"--mypy_out={out}",
            f"--mypy_grpc_out=only_async:{out}", f"{PACKAGE_PATH}/{PROTO.name}"]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed for {PROTO}")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "src", help="source root to write under (default: src)")
    folder = regenerate(parser.parse_args().out)
    print(f"generated {', '.join(sorted(p.name for p in folder.glob('ollama_proxy_pb2*')))} in {folder}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
