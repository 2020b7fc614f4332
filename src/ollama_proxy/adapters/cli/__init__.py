"""The terminal front: `ollama-proxy status`, a client of a running proxy's `GET /status`."""
