"""Running under systemd: the user unit and its installer (`ollama-proxy install-service`), and the
readiness, reload and stop notifications a `Type=notify` service sends its manager."""
