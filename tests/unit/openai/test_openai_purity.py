from __future__ import annotations

import subprocess
import sys

import ollama_proxy.core.openai as translation

IO_MODULES = ("aiohttp", "asyncio", "socket", "ssl", "yaml", "subprocess", "gguf", "numpy")


def test_translation_core_imports_no_io_library() -> None:
    code = ("import sys, ollama_proxy.core.openai\n"
            f"print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in {IO_MODULES!r})))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == ""


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in vars(translation) if not name.startswith("_")}
    modules = {"errors", "fields", "messages", "requests", "responses", "reverse_requests",
               "reverse_responses", "responses_api", "responses_events", "sse", "stream", "annotations"}
    assert set(translation.__all__) == public - modules
