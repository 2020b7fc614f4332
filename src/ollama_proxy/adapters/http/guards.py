"""Authentication and CORS as decisions over header values, shared by the HTTP fronts (aiohttp's
route guards and the fast front apply them the same way)."""

from __future__ import annotations

import hmac

from ollama_proxy.adapters.http.statuspage import PAGE_PATHS

KEY_REFUSAL = "missing or invalid API key (send Authorization: Bearer <key> or X-API-Key)"
CORS_ALLOW_HEADERS = "Authorization, Content-Type, User-Agent, Accept, X-Requested-With, OpenAI-Beta, " \
                     "X-Request-ID, X-Target-Backend, X-Priority, X-Latency-Critical, X-Power-Efficient, " \
                     "X-Max-Latency-Ms, X-Max-Power-Watts, X-Media-Type, X-API-Key, x-stainless-*"
PREFLIGHT_HEADERS = {"Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, HEAD, OPTIONS",
                     "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS}


class ApiKeys:
    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = [k.encode() for k in keys]

    @staticmethod
    def open_path(path: str) -> bool:
        # Only /health and the status page's files are open: a load balancer's or container's health
        # check carries no key, nor does a browser opening the page (whose data requests do).
        return path == "/health" or path in PAGE_PATHS

    def accepts(self, x_api_key: str | None, authorization: str | None) -> bool:
        given = x_api_key or (authorization or "").removeprefix("Bearer ").strip()
        try:
            # Header bytes that are not UTF-8 reach us as surrogate escapes: compare the bytes sent.
            given_bytes = given.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            given_bytes = b""
        return any(hmac.compare_digest(given_bytes, key) for key in self._keys)


class CorsPolicy:
    """CORS for browser clients: Ollama refuses foreign origins with an empty 403, and the proxy
    strips Origin before forwarding, so the proxy is where origins are allowed or refused."""

    def __init__(self, origins: tuple[str, ...]) -> None:
        self.origins = frozenset(origins)
        self.allow_all = "*" in self.origins

    def allowed(self, origin: str) -> bool:
        # Allowing http://localhost allows it on any port, as Ollama's defaults do.
        scheme_host = origin.rsplit(":", 1)[0] if origin.count(":") == 2 else origin
        return self.allow_all or origin in self.origins or scheme_host in self.origins

    @staticmethod
    def refusal(origin: str) -> str:
        return f"origin {origin!r} is not allowed (server.cors_origins)"

    @staticmethod
    def response_headers(origin: str) -> tuple[tuple[str, str], ...]:
        """What an answer to an allowed origin carries."""
        return (("Access-Control-Allow-Origin", origin), ("Access-Control-Expose-Headers", "*"), ("Vary", "Origin"))
