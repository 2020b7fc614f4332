"""Driven adapters that reach the backends: the aiohttp implementation of `service.transport`."""
