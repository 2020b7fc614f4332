"""Multi-backend routing decisions, one concept per module:

    state.py     BackendView, RouteRequest, ThermalState, BreakerState
    breaker.py   CircuitBreaker, Outcome, classify_status
    latency.py   LatencyBook (learned latency and load time), sample_kind, estimate_latency_ms
    weights.py   Weights per efficiency mode, header shifts (core.modes: each mode's other rules)
    fleet.py     Fleet (backend facts as numpy columns and lists, cached by the router)
    load.py      Load (in flight and queued per backend), LoadBoard (keeps it current)
    select.py    select / select_backend -> RoutingDecision (or NoBackendAvailable)
    ranking.py   Ranking, BackendScore: what screening and scoring hand select.py
    scalar.py    screening and scoring one backend at a time (small fleets)
    vector.py    screening and scoring every backend at once with numpy (large fleets)
    explain.py   X-Routing-Reason: the token vocabulary, refusals
    headers.py   parse_route_headers, decision_headers, refusal_headers

Pure: the async backend pool owns live state and I/O and calls into these with values. This file
re-exports nothing on purpose: `core.thermal` imports `state` while `select` reads `core.thermal`,
and eager re-exports here would turn that into an import cycle.
"""
