"""Adapters: everything that does I/O around the pure core (HTTP, upstream, sysfs, gRPC, D-Bus)."""
