"""Code generated from proto/ollama_proxy.proto by tools/regenerate_grpc.py: do not edit."""
