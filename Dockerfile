# ollama-proxy in a container. Build: docker build -t ollama-proxy .
# In front of an Ollama container named `ollama` (the default):  docker run -p 11435:11435 ollama-proxy
# In front of Ollama on the host:      docker run --network host ollama-proxy --ollama-host 127.0.0.1
# Without Ollama (embedded demo):      docker run -p 11435:11435 ollama-proxy demo --host 0.0.0.0
# With a config file: mount it and set OLLAMA_PROXY_CONFIG to its path (as compose.yaml does). OLLAMA_BASE_URL
# then replaces the endpoint of the file's router.default_backend, or of its sole backend; -e OLLAMA_BASE_URL=
# (empty) keeps the file's endpoints.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OLLAMA_BASE_URL=http://ollama:11434

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . && useradd --system --uid 10001 --no-create-home proxy
# Numeric, so that `runAsNonRoot` policies can verify it without resolving the name.
USER 10001

EXPOSE 11435
# /health needs no API key; slim images have no curl. OLLAMA_PROXY_URL tells it another port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('OLLAMA_PROXY_URL', 'http://127.0.0.1:11435') + '/health', timeout=4)"]
# Inside a container the proxy must listen beyond loopback to be reachable; protect it with
# server.api_keys when the port is published beyond the host.
ENTRYPOINT ["ollama-proxy"]
CMD ["serve", "--host", "0.0.0.0"]
