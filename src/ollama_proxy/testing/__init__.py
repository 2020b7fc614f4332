"""Helpers for the project's own tests (never imported by the proxy itself)."""
