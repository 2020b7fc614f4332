"""The live status page at `/ui`: three static files shipped with the package (`ui/`), with no build
step and nothing fetched from elsewhere (the proxy may be offline). The browser polls `GET /status`
and renders it; setting the mode posts to `/efficiency`.

The files hold no data, so they are served without an API key: a browser's navigation cannot carry
an `Authorization` header. With keys configured the page asks for one and sends it with every data
request; `/status` and `/efficiency` refuse requests without it as they always do.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from ollama_proxy.adapters.http.replies import error_response

_CONTENT_TYPES = {"index.html": "text/html", "status.js": "text/javascript", "status.css": "text/css"}
# The page may load only its own script and style and talk only to this origin; no inline code, no
# frames, no form posts (the key form is handled by the script, so a key never lands in a URL).
_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
PAGE_PATHS = frozenset({"/ui", "/ui/", *(f"/ui/{name}" for name in _CONTENT_TYPES)})


class StatusPage:
    def __init__(self) -> None:
        folder = resources.files("ollama_proxy.adapters.http") / "ui"
        self._files = {name: (folder / name).read_bytes() for name in _CONTENT_TYPES}

    async def index(self, request: web.Request) -> web.Response:
        return self._serve("index.html")

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["file"] or "index.html"
        if name not in self._files:
            return error_response(request.path, f"no such file in the status page: {name} (open /ui)", 404)
        return self._serve(name)

    def _serve(self, name: str) -> web.Response:
        return web.Response(body=self._files[name], content_type=_CONTENT_TYPES[name], charset="utf-8",
                            headers=_HEADERS)
