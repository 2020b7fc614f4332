"""The WebSocket front (`/v1/stream/ws` on the HTTP port)."""
