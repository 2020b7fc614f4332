"""The simulated Ollama server as an aiohttp application, and ways to run it.

`build_sim_app` assembles the routes (native, management, /v1 with its OpenAI, Anthropic and Responses
layers, and the /sim/ control endpoints), plus one middleware that counts requests, applies
before-response faults and turns `SimError` into Ollama's error bodies (OpenAI- or Anthropic-shaped
under /v1). `SimServer` runs it on a free port inside a test; `run_sim` blocks for
the CLI. Request logic lives in the handler modules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from aiohttp import web

from ollama_proxy.sim import manage, messages, native, openai, responses
from ollama_proxy.sim.config import SimConfig
from ollama_proxy.sim.faults import Fault
from ollama_proxy.sim.rules import SimError
from ollama_proxy.sim.state import SIM_STATE, SimState
from ollama_proxy.sim.wire import FAULT_KEY, error_response, hang, json_response, read_json

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_OPENAI_TYPES = {400: "invalid_request_error", 404: "not_found_error"}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 404: "not_found_error", 503: "overloaded_error"}


def _error(path: str, status: int, message: str) -> web.Response:
    if path == "/v1/messages":
        kind = _ANTHROPIC_TYPES.get(status, "api_error")
        return json_response({"type": "error", "error": {"type": kind, "message": message}}, status)
    if path.startswith("/v1/"):
        kind = _OPENAI_TYPES.get(status, "api_error")
        body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        return json_response(body, status)
    return error_response(status, message)


async def _before_response(request: web.Request, fault: Fault) -> web.StreamResponse | None:
    """Faults that act before the handler runs; None lets the request through."""
    if fault.mode == "slow":
        await asyncio.sleep(fault.delay_s)
        return None
    if fault.mode == "hang":
        await hang(request)
    if fault.mode in ("busy", "error"):
        return _error(request.path, fault.status, fault.message)
    return None


@web.middleware
async def _sim_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[SIM_STATE]
    try:
        if not request.path.startswith("/sim/"):
            state.stats.requests[request.path] += 1
            state.stats.last_headers[request.path] = {k.lower(): v for k, v in request.headers.items()}
            fault = state.faults.take(request.path)
            if fault is not None:
                request[FAULT_KEY] = fault
                if fault.before_response and (early := await _before_response(request, fault)) is not None:
                    return early
        return await handler(request)
    except asyncio.CancelledError:
        state.stats.cancelled += 1
        raise
    except SimError as exc:
        return _error(request.path, exc.status, exc.message)
    except web.HTTPNotFound:
        return web.Response(status=404, text="404 page not found", content_type="text/plain")
    except web.HTTPMethodNotAllowed:
        return web.Response(status=405, text="405 method not allowed", content_type="text/plain")


async def _stats(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    active = state.faults.active
    body = state.stats.snapshot(state.scheduler.snapshot(), state.faults.triggered)
    return json_response(body | {"fault": active.to_json() if active else None})


async def _set_fault(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    fault = Fault.from_json(await read_json(request, lambda _path, _body: None))
    state.faults.set(fault)
    return json_response({"fault": fault.to_json()})


async def _clear_faults(request: web.Request) -> web.Response:
    request.app[SIM_STATE].faults.clear()
    return json_response({"fault": None})


async def _reset(request: web.Request) -> web.Response:
    request.app[SIM_STATE].reset()
    return json_response({"reset": True})


def build_sim_app(config: SimConfig | None = None) -> web.Application:
    """An aiohttp app that behaves like one Ollama server with `config`'s models and hardware."""
    app = web.Application(middlewares=[_sim_middleware], client_max_size=1 << 30)
    app[SIM_STATE] = SimState(config or SimConfig())
    manage.add_routes(app)
    native.add_routes(app)
    openai.add_routes(app)
    messages.add_routes(app)
    responses.add_routes(app)
    app.router.add_get("/sim/stats", _stats)
    app.router.add_post("/sim/faults", _set_fault)
    app.router.add_delete("/sim/faults", _clear_faults)
    app.router.add_post("/sim/reset", _reset)
    return app


class SimServer:
    """Run a simulator on a real socket for the length of an `async with` block.

        async with SimServer(SimConfig(time_scale=0)) as sim:
            client = ollama.AsyncClient(host=sim.url)

    `port=0` binds a free port; `sim.state` exposes the live state for white-box assertions.
    """

    def __init__(self, config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = build_sim_app(config)
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None

    @property
    def state(self) -> SimState:
        return self.app[SIM_STATE]

    @property
    def port(self) -> int:
        if self._runner is None:
            raise RuntimeError("SimServer is not running; use it as `async with SimServer(...) as sim`")
        return int(self._runner.addresses[0][1])

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    async def __aenter__(self) -> SimServer:
        # Cancelling handlers when the client goes frees their slots, as Ollama does (ref. 7.1).
        self._runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def run_sim(config: SimConfig, host: str = "127.0.0.1", port: int = 11434, **run_app_kwargs: Any) -> None:
    """Serve a simulator until interrupted (the `ollama-proxy simulate` and `python -m` entry)."""
    models = ", ".join(spec.name for spec in config.model_specs())
    banner = (f"simulated Ollama on http://{host}:{port} (profile {config.profile}, "
              f"time_scale {config.time_scale}, models: {models})")
    web.run_app(build_sim_app(config), host=host, port=port, handler_cancellation=True, access_log=None,
                print=lambda _default: print(banner, flush=True), **run_app_kwargs)
