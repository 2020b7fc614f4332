"""The gRPC front: `ollama_proxy.OllamaProxy` (proto/ollama_proxy.proto) over the one pipeline."""
