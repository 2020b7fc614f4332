"""The sd_notify protocol, spoken directly: one datagram per state change to the unix socket named in
`$NOTIFY_SOCKET` (an abstract one when it starts with '@'). Without that variable, as when run from a
shell, every call does nothing. A lost notification is logged, never raised: the proxy serves regardless.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import MutableMapping

log = logging.getLogger("ollama_proxy.systemd")


class ServiceNotifier:
    def __init__(self, address: str | None) -> None:
        """`address` as `$NOTIFY_SOCKET` writes it; None (or a kind of address other than a unix socket,
        such as `vsock:`) turns notifications off."""
        self._address = _socket_address(address) if address else None
        if address and self._address is None:
            log.info("NOTIFY_SOCKET=%s is not a unix socket: the service manager is not told of readiness",
                     address)

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str]) -> ServiceNotifier:
        """Takes `NOTIFY_SOCKET` out of `environ` (as sd_notify's `unset_environment` does), so the
        processes the proxy starts (nvidia-smi) cannot speak for it."""
        return cls(environ.pop("NOTIFY_SOCKET", None))

    def ready(self, status: str) -> None:
        """Serving: after start-up, and again after each reload."""
        self._send(f"READY=1\nSTATUS={status}")

    def reloading(self) -> None:
        # MONOTONIC_USEC lets the manager tell this reload from an earlier one (Type=notify-reload needs it).
        self._send(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}\n"
                   "STATUS=reloading the configuration")

    def stopping(self) -> None:
        self._send("STOPPING=1\nSTATUS=stopping: letting requests in flight finish")

    def _send(self, message: str) -> None:
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)  # a manager that stopped reading must not stall the event loop
                sock.sendto(message.encode(), self._address)
        except OSError as exc:
            log.warning("could not notify the service manager (%s): %s", message.split("\n", 1)[0], exc)


def _socket_address(address: str) -> str | None:
    if address.startswith("@"):
        return "\0" + address[1:]
    return address if address.startswith("/") else None
