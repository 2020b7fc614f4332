"""The gRPC server: `ollama_proxy.OllamaProxy` and server reflection on `server.host:server.grpc_port`,
on the proxy's own event loop (`grpc.aio`), with the HTTP port's API keys.

Built by the composition root, which binds it with the HTTP port (a taken port is a `ListenError`
before anything starts), starts it once the backends are up and stops it with the HTTP server.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from grpc_reflection.v1alpha import reflection

from ollama_proxy.adapters.grpc.front import GrpcFront
from ollama_proxy.adapters.grpc.generated import ollama_proxy_pb2 as pb
from ollama_proxy.adapters.grpc.generated.ollama_proxy_pb2_grpc import add_OllamaProxyServicer_to_server
from ollama_proxy.errors import ListenError

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["OllamaProxy"].full_name
_MISSING_KEY = "missing or invalid API key (send metadata authorization: Bearer <key>, or x-api-key: <key>)"
# grpc-core's default is SO_REUSEPORT, which lets a second server bind a port already in use and
# take half its connections: off, so a taken port is an error.
_OPTIONS = (("grpc.so_reuseport", 0),)


class GrpcServer:
    def __init__(self, front: GrpcFront, api_keys: Sequence[str]) -> None:
        self.front = front
        self._api_keys = tuple(api_keys)
        self._server: grpc.aio.Server | None = None
        self.port = 0

    @property
    def in_flight(self) -> int:
        return self.front.in_flight

    def bind(self, host: str, port: int) -> int:
        """Create the server and bind its port (0 picks one); ListenError when it cannot."""
        interceptors = [ApiKeyCheck(self._api_keys)] if self._api_keys else []
        server = grpc.aio.server(interceptors=interceptors, options=_OPTIONS)
        add_OllamaProxyServicer_to_server(self.front, server)
        reflection.enable_server_reflection((SERVICE_NAME, reflection.SERVICE_NAME), server)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            self.port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise ListenError(f"cannot listen for gRPC on {address} (server.grpc_port): {exc}") from exc
        self._server = server
        return self.port

    async def start(self) -> None:
        assert self._server is not None, "bind() first"
        await self._server.start()

    async def stop(self, grace_s: float | None) -> None:
        """Stop accepting RPCs; those in flight get `grace_s` to finish, then are cancelled."""
        if self._server is not None:
            await self._server.stop(grace_s)


if TYPE_CHECKING:  # grpc's classes are generic only in their stubs
    Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]]


class ApiKeyCheck(grpc.aio.ServerInterceptor):
    """`server.api_keys` for every RPC, reflection included: the key comes as `authorization: Bearer <key>`
    or `x-api-key: <key>` metadata, as the HTTP port takes it in headers."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = [k.encode() for k in keys]

    async def intercept_service(self, continuation: Continuation, details: grpc.HandlerCallDetails
                                ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None or self.allowed(details.invocation_metadata):
            return handler
        return _refusing(handler)

    def allowed(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> bool:
        values = dict(metadata or ())
        given = values.get("x-api-key") or _text(values.get("authorization")).removeprefix("Bearer ").strip()
        given_bytes = given.encode() if isinstance(given, str) else given
        return any(hmac.compare_digest(given_bytes, key) for key in self._keys)


def _text(value: str | bytes | None) -> str:
    return value if isinstance(value, str) else ""


def _refusing(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape as `handler` that answers UNAUTHENTICATED."""
    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _MISSING_KEY)

    kind = {(False, False): grpc.unary_unary_rpc_method_handler, (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler, (True, True): grpc.stream_stream_rpc_method_handler}
    make: Any = kind[(handler.request_streaming, handler.response_streaming)]
    return make(refuse, request_deserializer=handler.request_deserializer,  # type: ignore[no-any-return]
                response_serializer=handler.response_serializer)
