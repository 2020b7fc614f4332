from __future__ import annotations

import doctest
import subprocess
import sys

import pytest

import ollama_proxy.core.anthropic as translation
from ollama_proxy.core.anthropic import errors, messages, replies, requests, stream

IO_MODULES = ("aiohttp", "asyncio", "socket", "ssl", "yaml", "subprocess", "gguf", "numpy", "httpx", "httpx2")


def test_translation_core_imports_no_io_library() -> None:
    code = ("import sys, ollama_proxy.core.anthropic\n"
            f"print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in {IO_MODULES!r})))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == ""


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in vars(translation) if not name.startswith("_")}
    modules = {"errors", "messages", "replies", "requests", "stream", "annotations"}
    assert set(translation.__all__) == public - modules


@pytest.mark.parametrize("module", [errors, messages, replies, requests, stream], ids=lambda m: m.__name__)
def test_docstring_examples_hold(module: object) -> None:
    assert doctest.testmod(module).failed == 0  # type: ignore[arg-type]
