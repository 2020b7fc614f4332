"""What the proxy knows about request ids a client gives it."""

from __future__ import annotations

import uuid


def is_uuid(text: str) -> bool:
    """Whether `text` reads as a UUID: llama-cpp-python's server answers any other X-Request-ID with an
    empty 400, so such an id is kept by the proxy and not passed on to OpenAI-type backends."""
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
