"""Multi-backend routing decisions, one concept per module:

    state.py     BackendView, RouteRequest, ThermalState, BreakerState
    breaker.py   CircuitBreaker, Outcome, classify_status
    latency.py   LatencyBook (learned latency and load time), sample_kind, estimate_latency_ms
    weights.py   Weights per efficiency mode, header shifts (core.modes: each mode's other rules)
    fleet.py     Fleet (backend facts as numpy columns, cached by the router), Load
    select.py    select / select_backend -> RoutingDecision (or NoBackendAvailable)
    explain.py   X-Routing-Reason: the token vocabulary, refusals
    headers.py   parse_route_headers, decision_headers, refusal_headers

Pure: the async backend pool owns live state and I/O and calls into these with values. This file
re-exports nothing on purpose: `core.thermal` imports `state` while `select` reads `core.thermal`,
and eager re-exports here would turn that into an import cycle.
"""
