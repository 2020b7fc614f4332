"""Configuration: the schema (pure) and the loader that merges file, environment and flags."""

from ollama_proxy.config.schema import BackendConfig, Config

__all__ = ["BackendConfig", "Config"]
