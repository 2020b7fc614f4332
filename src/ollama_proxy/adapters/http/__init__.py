"""The HTTP face of the proxy (aiohttp server) and its upstream client."""
