# ollama-proxy in a container. Build: docker build -t ollama-proxy .
# Run in front of Ollama on the host:  docker run --network host ollama-proxy --ollama-host 127.0.0.1
# Without Ollama (embedded demo):      docker run -p 11435:11435 ollama-proxy demo --host 0.0.0.0
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . && useradd --system --uid 10001 proxy
USER proxy

EXPOSE 11435
# Inside a container the proxy must listen beyond loopback to be reachable; protect it with
# server.api_keys when the port is published beyond the host.
ENTRYPOINT ["ollama-proxy"]
CMD ["serve", "--host", "0.0.0.0"]
