"""The application layer between the fronts and the pure core: the one request pipeline every front
(HTTP, later WebSocket, gRPC, D-Bus) goes through, and the stateful services it runs on (backend pool,
router, context service, admission gates, background tasks).

It imports no web, RPC or bus framework: fronts turn their requests into a `pipeline.Call` and render
the `pipeline.Reply` back; the backends are reached through the `transport.Transport` port, whose
implementations live in `adapters/upstream/` (and an in-memory one in `ollama_proxy.testing`).
"""
