"""ollama-proxy: a drop-in proxy in front of Ollama that sizes the context window per request,
routes across backends and speaks every protocol its users have."""

__version__ = "0.1.0"

__all__ = ["__version__"]
