from __future__ import annotations

import pytest

from ollama_proxy.core.lru import LruCache


def test_drops_the_least_recently_used() -> None:
    cache: LruCache[str, object] = LruCache(max_entries=2)
    thing = object()
    cache.put("sha256:a", thing)
    cache.put("sha256:b", None)  # a remembered "nothing" is an entry too
    assert "sha256:b" in cache and cache.get("sha256:b") is None
    assert cache.get("sha256:a") is thing  # touches a, so b is now the oldest
    cache.put("sha256:c", thing)
    assert "sha256:b" not in cache
    assert "sha256:a" in cache and "sha256:c" in cache
    assert len(cache) == 2


def test_needs_room_for_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        LruCache(max_entries=0)
