"""The gRPC front end to end: the real proxy (gRPC on a free loopback port) in front of simulators, driven
by grpcio's generated asyncio stubs and by a reflection-only dynamic client, as grpcurl would be.

What each simulator received is read from its own records (`SimServer.state.stats`), so a claim the
proxy makes in a message (backend, num_ctx) is checked against what really reached a backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import grpc
import orjson
import pytest
from fleet import Fleet, start_fleet
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from ollama_proxy.adapters.grpc.generated import ollama_proxy_pb2 as pb
from ollama_proxy.adapters.grpc.generated.ollama_proxy_pb2_grpc import OllamaProxyStub
from ollama_proxy.app import bound_grpc_port, bound_port, drain, start
from ollama_proxy.config.load import validate
from ollama_proxy.errors import ListenError
from ollama_proxy.sim import SimServer

SERVICE = "ollama_proxy.OllamaProxy"
# The seed's grpcurl example, byte for byte.
SEED_EXAMPLE = '{"prompt": "Explain AI", "model": "llama3.2", "annotations": {"latency_critical": true}}'


class Proxies:
    """Starts the real proxy with gRPC on (port 0) and keeps each one's gRPC address."""

    def __init__(self, stack: contextlib.AsyncExitStack) -> None:
        self._stack = stack
        self.target = ""
        self.channel: grpc.aio.Channel | None = None

    async def make(self, config: dict[str, Any]) -> str:
        server = {"grpc_enabled": True, "grpc_port": 0, **config.get("server", {})}
        runner = await start(validate({**config, "server": server}), host="127.0.0.1", port=0)
        self._stack.push_async_callback(runner.cleanup)
        self.target = f"127.0.0.1:{bound_grpc_port(runner)}"
        return f"http://127.0.0.1:{bound_port(runner)}"

    async def stub(self) -> OllamaProxyStub:
        self.channel = grpc.aio.insecure_channel(self.target)
        self._stack.push_async_callback(self.channel.close)
        return OllamaProxyStub(self.channel)


@pytest.fixture
async def proxies() -> AsyncIterator[Proxies]:
    async with contextlib.AsyncExitStack() as stack:
        yield Proxies(stack)


async def one_sim(sim_factory: Callable[..., Any], proxies: Proxies, *, server: dict[str, Any] | None = None,
                  router: dict[str, Any] | None = None, max_concurrent: int = 4, **sim: Any
                  ) -> tuple[SimServer, OllamaProxyStub, str]:
    backend = await sim_factory(**sim)
    url = await proxies.make({"server": server or {}, "router": router or {}, "backends": [
        {"id": "sim", "endpoint": backend.url, "characteristics": {"max_concurrent": max_concurrent}}]})
    return backend, await proxies.stub(), url


async def fleet_of(sim_factory: Callable[..., Any], proxies: Proxies, **kwargs: Any) -> tuple[Fleet, OllamaProxyStub]:
    fleet = await start_fleet(sim_factory, proxies.make, **kwargs)
    return fleet, await proxies.stub()


async def refused(call: Any) -> grpc.aio.AioRpcError:
    """The error an RPC ends with (streamed or not), after whatever it streamed."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if hasattr(call, "__aiter__"):
            async for _ in call:
                pass
        else:
            await call
    return caught.value


async def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_generate_streams_tokens_in_order_then_one_final_message(sim_factory: Callable[..., Any],
                                                                       proxies: Proxies) -> None:
    sim, stub, url = await one_sim(sim_factory, proxies)
    chunks = [c async for c in stub.Generate(pb.GenerateRequest(model="llama3.2", prompt="Why is the sky blue?"))]
    # The same request over HTTP: the simulator is deterministic, so the text must match token for token.
    async with aiohttp.ClientSession() as s, s.post(f"{url}/proxy-context/auto/api/generate", json={
            "model": "llama3.2", "prompt": "Why is the sky blue?"}) as r:
        lines = [line for line in (await r.text()).splitlines() if line]
    http_tokens = [orjson.loads(line)["response"] for line in lines]
    assert [c.token for c in chunks] == http_tokens
    *tokens, final = chunks
    assert tokens and all(not c.done for c in tokens) and final.done
    assert chunks[0].ttft_ms > 0 and all(c.ttft_ms == 0 for c in chunks[1:])
    assert final.backend == "sim" and "only-candidate" in final.routing_reason
    assert final.eval_count == len(tokens) and final.prompt_eval_count > 0
    assert final.total_ms >= chunks[0].ttft_ms > 0
    assert final.done_reason == "stop"
    # The window the final message names is the one the backend was asked for.
    assert final.num_ctx == sim.state.stats.last_options["num_ctx"] == 2048


async def test_context_and_options_reach_the_backend(sim_factory: Callable[..., Any], proxies: Proxies) -> None:
    sim, stub, _ = await one_sim(sim_factory, proxies)
    options = pb.GenerateRequest().options
    options.update({"temperature": 0.25, "num_predict": 4, "seed": 7, "stop": ["\n\n"]})
    chunks = [c async for c in stub.Generate(pb.GenerateRequest(model="llama3.2", prompt="hi", options=options,
                                                                 context="8192", system="be brief"))]
    assert chunks[-1].num_ctx == 8192
    body = sim.state.stats.last_body["/api/generate"]
    # Integers stay integers (protobuf's Struct has only doubles; Ollama refuses 4.0 for num_predict).
    assert body["options"] == {"temperature": 0.25, "num_predict": 4, "seed": 7, "stop": ["\n\n"], "num_ctx": 8192}
    assert body["system"] == "be brief" and body["stream"] is True
    assert chunks[-1].eval_count <= 4

    error = await refused(stub.Generate(pb.GenerateRequest(model="llama3.2", prompt="hi", context="1000")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "auto or one of 2048, 4096, 8192, 16384, 32768" in (error.details() or "")
    # The backend's 500 for an option of the wrong type is the request's fault, as every backend would say.
    wrong = pb.GenerateRequest().options
    wrong.update({"num_predict": "many"})
    error = await refused(stub.Generate(pb.GenerateRequest(model="llama3.2", prompt="hi", options=wrong)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert 'option "num_predict" must be of type integer' in (error.details() or "")


async def test_chat_streams_the_reply(sim_factory: Callable[..., Any], proxies: Proxies) -> None:
    sim, stub, _ = await one_sim(sim_factory, proxies)
    messages = [pb.Message(role="system", content="You are terse."), pb.Message(role="user", content="Hello")]
    chunks = [c async for c in stub.Chat(pb.ChatRequest(model="qwen3:4b", messages=messages))]
    assert chunks[-1].done and "".join(c.token for c in chunks).strip()
    assert sim.state.stats.last_body["/api/chat"]["messages"] == [
        {"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello"}]
    assert chunks[-1].num_ctx == sim.state.stats.last_options["num_ctx"]


async def test_embed(sim_factory: Callable[..., Any], proxies: Proxies) -> None:
    _, stub, _ = await one_sim(sim_factory, proxies)
    answer = await stub.Embed(pb.EmbedRequest(model="nomic-embed-text", input=["one", "two"]))
    assert len(answer.embeddings) == 2 and len(answer.embeddings[0].values) == 768
    assert answer.backend == "sim" and answer.prompt_eval_count > 0


@pytest.mark.parametrize(("annotations", "backend"), [
    pytest.param(pb.Annotations(target_backend="cpu"), "cpu", id="target-backend"),
    pytest.param(pb.Annotations(latency_critical=True), "nvidia", id="latency-critical"),
    pytest.param(pb.Annotations(power_efficient=True), "npu", id="power-efficient"),
    pytest.param(pb.Annotations(max_power_watts=15, priority="high"), "igpu", id="power-cap"),
])
async def test_annotations_route_as_the_http_headers_do(sim_factory: Callable[..., Any], proxies: Proxies,
                                                        annotations: pb.Annotations, backend: str) -> None:
    fleet, stub = await fleet_of(sim_factory, proxies)
    chunks = [c async for c in stub.Generate(pb.GenerateRequest(model="llama3.2", prompt="hi",
                                                                annotations=annotations))]
    assert chunks[-1].backend == backend
    served = await fleet.served()
    assert served == {b: int(b == backend) for b in served}


async def test_refusals_have_the_right_codes(sim_factory: Callable[..., Any], proxies: Proxies) -> None:
    fleet, stub = await fleet_of(sim_factory, proxies)
    cases = [
        (pb.GenerateRequest(model="llama3.2", prompt="hi", annotations=pb.Annotations(max_power_watts=1)),
         grpc.StatusCode.UNAVAILABLE, "no backend satisfies the request"),
        (pb.GenerateRequest(model="no-such-model", prompt="hi"), grpc.StatusCode.NOT_FOUND, "no-such-model"),
        (pb.GenerateRequest(model="llama3.2", prompt="hi", annotations=pb.Annotations(priority="urgent")),
         grpc.StatusCode.INVALID_ARGUMENT, "priority: unknown priority 'urgent'"),
        (pb.GenerateRequest(model="llama3.2", prompt="hi", annotations=pb.Annotations(max_latency_ms=-5)),
         grpc.StatusCode.INVALID_ARGUMENT, "max_latency_ms: expected a positive number"),
        (pb.GenerateRequest(model="llama3.2", prompt="hi", annotations=pb.Annotations(target_backend="gpu9")),
         grpc.StatusCode.INVALID_ARGUMENT, "unknown target_backend 'gpu9'"),
        (pb.GenerateRequest(prompt="hi"), grpc.StatusCode.INVALID_ARGUMENT, "model: a model name is required"),
    ]
    for request, code, says in cases:
        error = await refused(stub.Generate(request))
        assert (error.code(), says in (error.details() or "")) == (code, True), error.details()
    error = await refused(stub.Chat(pb.ChatRequest(model="llama3.2")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sum((await fleet.served()).values()) == 0


async def test_a_backends_own_404_is_not_found(sim_factory: Callable[..., Any], proxies: Proxies) -> None:
    # One backend: the router does not screen models, so the 404 is the backend's reply, mapped.
    _, stub, _ = await one_sim(sim_factory, proxies)
    error = await refused(stub.Generate(pb.GenerateRequest(model="ghost", prompt="hi")))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "ghost" in (error.details() or "")


async def test_a_stream_that_breaks_ends_with_an_error_after_its_tokens(sim_factory: Callable[..., Any],
                                                                        proxies: Proxies) -> None:
    sim, stub, _ = await one_sim(sim_factory, proxies, reply_tokens=(30, 30))
    async with aiohttp.ClientSession() as s, s.post(f"{sim.url}/sim/faults", json={
            "mode": "drop_mid_stream", "after_chunks": 3, "count": 1, "paths": ["/api/generate"]}) as r:
        assert r.status == 200
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for chunk in stub.Generate(pb.GenerateRequest(model="llama3.2", prompt="hi")):
            received.append(chunk)
    # Up to the three lines the backend sent: aiohttp's reader raises a broken connection before it hands
    # over what it had buffered, so the upstream adapter may lose the last lines before the break.
    assert 1 <= len(received) <= 3 and not any(c.done for c in received)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "broke off" in (caught.value.details() or "")


async def test_cancelling_the_rpc_stops_the_upstream_request(sim_factory: Callable[..., Any],
                                                             proxies: Proxies) -> None:
    sim, stub, _ = await one_sim(sim_factory, proxies, profile="nvidia", time_scale=1.0, reply_tokens=(5000, 5000))
    call = stub.Generate(pb.GenerateRequest(model="llama3.2", prompt="hi"))
    for _ in range(3):
        assert not (await call.read()).done
    call.cancel()
    await wait_for(lambda: sim.state.stats.cancelled == 1, "the simulator to see its request cancelled")
    status = (await stub.ListBackends(pb.ListBackendsRequest())).backends[0]
    assert status.in_flight == 0


async def test_a_deadline_propagates_upstream(sim_factory: Callable[..., Any], proxies: Proxies) -> None:
    sim, stub, _ = await one_sim(sim_factory, proxies, profile="nvidia", time_scale=1.0, reply_tokens=(5000, 5000))
    error = await refused(stub.Generate(pb.GenerateRequest(model="llama3.2", prompt="hi"), timeout=1.0))
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await wait_for(lambda: sim.state.stats.cancelled == 1, "the simulator to see its request cancelled")


async def test_a_full_queue_is_resource_exhausted_with_retry_after(sim_factory: Callable[..., Any],
                                                                   proxies: Proxies) -> None:
    _, stub, _ = await one_sim(sim_factory, proxies, router={"queue": {"max_length": 0}}, max_concurrent=1,
                                 profile="nvidia", time_scale=1.0, reply_tokens=(5000, 5000))
    holding = stub.Generate(pb.GenerateRequest(model="llama3.2", prompt="hi"))
    await holding.read()
    error = await refused(stub.Generate(pb.GenerateRequest(model="llama3.2", prompt="hi")))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    retry_after = dict(error.trailing_metadata() or ())["retry-after-s"]
    assert float(retry_after) > 0
    holding.cancel()


async def test_api_keys_guard_every_rpc_and_reflection(sim_factory: Callable[..., Any], proxies: Proxies) -> None:
    _, stub, _ = await one_sim(sim_factory, proxies, server={"api_keys": ["s3cret"]})
    reflection = reflection_pb2_grpc.ServerReflectionStub(proxies.channel)

    async def list_services(metadata: tuple[tuple[str, str], ...]) -> list[str]:
        call = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                               metadata=metadata)
        answers = [a async for a in call]
        return [s.name for s in answers[0].list_services_response.service]

    for metadata in [(), (("authorization", "Bearer wrong"),), (("x-api-key", "s3cre"),)]:
        error = await refused(stub.GetEfficiency(pb.GetEfficiencyRequest(), metadata=metadata))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        error = await refused(stub.Generate(pb.GenerateRequest(model="llama3.2", prompt="hi"), metadata=metadata))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await list_services(metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    for metadata in [(("authorization", "Bearer s3cret"),), (("x-api-key", "s3cret"),)]:
        assert (await stub.GetEfficiency(pb.GetEfficiencyRequest(), metadata=metadata)).mode == "balanced"
        chunks = [c async for c in stub.Generate(pb.GenerateRequest(model="llama3.2", prompt="hi"),
                                                 metadata=metadata)]
        assert chunks[-1].done
        assert SERVICE in await list_services(metadata)


def dynamic_call(target: str, method: str, body: str) -> tuple[list[str], list[dict[str, Any]]]:
    """What grpcurl does: learn the service from reflection alone, build the request from JSON, call it.
    Synchronous grpc (as grpcurl is a separate process): run it off the event loop the proxy is on."""
    with grpc.insecure_channel(target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = list(database.get_services())
        descriptor = descriptor_pool.DescriptorPool(database).FindServiceByName(SERVICE).FindMethodByName(method)
        request_type = message_factory.GetMessageClass(descriptor.input_type)
        reply_type = message_factory.GetMessageClass(descriptor.output_type)
        call = channel.unary_stream(f"/{SERVICE}/{method}", request_serializer=request_type.SerializeToString,
                                    response_deserializer=reply_type.FromString)
        request = json_format.Parse(body, request_type())
        replies = [json_format.MessageToDict(r, preserving_proto_field_name=True) for r in call(request, timeout=30)]
    return services, replies


async def test_reflection_serves_the_seed_grpcurl_example(sim_factory: Callable[..., Any],
                                                          proxies: Proxies) -> None:
    fleet, _ = await fleet_of(sim_factory, proxies)
    services, replies = await asyncio.to_thread(dynamic_call, proxies.target, "Generate", SEED_EXAMPLE)
    assert SERVICE in services and "grpc.reflection.v1alpha.ServerReflection" in services
    assert replies[-1]["done"] is True and replies[-1]["backend"] == "nvidia"  # latency_critical honoured
    assert "".join(r.get("token", "") for r in replies).strip()
    assert (await fleet.served())["nvidia"] == 1


async def test_listings_and_the_efficiency_mode(sim_factory: Callable[..., Any], proxies: Proxies) -> None:
    fleet, stub = await fleet_of(sim_factory, proxies, extra_models={"cpu": ["phi3:mini"]})
    models = {m.name: m for m in (await stub.ListModels(pb.ListModelsRequest())).models}
    assert sorted(models["llama3.2:latest"].backends) == ["cpu", "igpu", "npu", "nvidia"]
    assert list(models["phi3:mini"].backends) == ["cpu"] and models["phi3:mini"].family == "phi3"

    listing = await stub.ListBackends(pb.ListBackendsRequest())
    backends = {b.id: b for b in listing.backends}
    assert set(backends) == {"npu", "igpu", "nvidia", "cpu"} and listing.mode == "balanced"
    assert backends["nvidia"].power_watts == 55 and backends["nvidia"].reachable
    assert backends["cpu"].breaker == "closed" and dict(backends["cpu"].queue) == {
        "best-effort": 0, "normal": 0, "high": 0, "critical": 0}
    assert "phi3:mini" in backends["cpu"].models
    assert backends["cpu"].details["hardware"] == "cpu"

    assert (await stub.GetEfficiency(pb.GetEfficiencyRequest())).mode == "balanced"
    changed = await stub.SetEfficiency(pb.SetEfficiencyRequest(mode="quiet"))
    assert (changed.mode, changed.effective_mode) == ("quiet", "quiet")
    assert (await fleet.get("/efficiency"))["mode"] == "quiet"
    error = await refused(stub.SetEfficiency(pb.SetEfficiencyRequest(mode="turbo")))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "turbo" in (error.details() or "")


async def test_a_taken_grpc_port_is_a_listen_error(sim: SimServer) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = validate({"server": {"grpc_enabled": True, "grpc_port": port},
                           "backends": [{"id": "sim", "endpoint": sim.url}]})
        with pytest.raises(ListenError, match=f"127.0.0.1:{port}.*server.grpc_port"):
            await start(config, host="127.0.0.1", port=0)


async def test_drain_lets_a_stream_finish_and_refuses_new_calls(sim_factory: Callable[..., Any]) -> None:
    sim = await sim_factory(profile="nvidia", time_scale=1.0, reply_tokens=(40, 40))
    runner = await start(validate({"server": {"grpc_enabled": True, "grpc_port": 0},
                                   "backends": [{"id": "sim", "endpoint": sim.url}]}), host="127.0.0.1", port=0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bound_grpc_port(runner)}") as channel:
        stub = OllamaProxyStub(channel)
        streaming = stub.Generate(pb.GenerateRequest(model="llama3.2", prompt="hi"))
        await streaming.read()
        draining = asyncio.create_task(drain(runner, 10))
        await asyncio.sleep(0.1)
        late = await refused(stub.GetEfficiency(pb.GetEfficiencyRequest(), timeout=5))
        assert late.code() == grpc.StatusCode.UNAVAILABLE
        while (chunk := await streaming.read()) is not grpc.aio.EOF and not chunk.done:
            pass
        assert chunk is not grpc.aio.EOF and chunk.done
        await draining
