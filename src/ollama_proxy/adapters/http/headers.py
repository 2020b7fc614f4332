"""Which headers cross the proxy: hop-by-hop headers (RFC 9110 7.6.1) never do, and a few more are
the proxy's own business (see the comments)."""

from __future__ import annotations

from collections.abc import Collection, Iterable

# Connection-level headers are meaningful for one hop only (RFC 9110 7.6.1). Host is rewritten
# because Ollama's DNS-rebinding check refuses foreign hosts with an empty 403; Origin is
# dropped because Ollama refuses unknown origins the same way: the proxy does CORS itself.
_REQUEST_DROP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "TE", "Trailer",
    "Transfer-Encoding", "Upgrade", "Host", "Origin", "Content-Length", "Expect",
))
_RESPONSE_DROP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Transfer-Encoding", "Content-Length", "Date", "Server", "Trailer",
    "Upgrade", "Proxy-Connection", "Access-Control-Allow-Origin", "Access-Control-Allow-Credentials",
    "Access-Control-Allow-Headers", "Access-Control-Allow-Methods", "Access-Control-Expose-Headers",
))


def forwardable_request_headers(headers: Iterable[tuple[str, str]], extra_drop: frozenset[str] = frozenset()
                                ) -> tuple[tuple[str, str], ...]:
    return tuple((name, value) for name, value in headers
                 if (lowered := name.lower()) not in _REQUEST_DROP and lowered not in extra_drop)


def forwardable_response_pairs(headers: Iterable[tuple[str, str]], replaced: Collection[str] = ()
                               ) -> list[tuple[str, str]]:
    """The response headers that may cross the proxy, less those `replaced` names (lower case)."""
    return [(name, value) for name, value in headers
            if (lowered := name.lower()) not in _RESPONSE_DROP and lowered not in replaced]
