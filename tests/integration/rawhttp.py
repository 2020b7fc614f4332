"""Raw HTTP responses read off a socket, parsed strictly: the edge tests send requests byte for byte
(no client library normalises them) and check that what comes back is a well-formed answer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-cased names; the last of repeated headers wins
    body: bytes
    raw: bytes

    @property
    def forwarded(self) -> bool:
        """Whether the proxy sent the request on (it then says which backend it used)."""
        return "x-backend-used" in self.headers

    def json(self) -> Any:
        return json.loads(self.body)

    def short(self) -> str:
        return repr(self.raw[:300])


def parse_response(raw: bytes, method: str) -> RawResponse:
    """One HTTP/1.x response read to the end of the connection; AssertionError if it is not one."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    while sep and head.startswith(b"HTTP/1.1 1"):  # an interim answer (100 Continue) comes first
        head, sep, rest = rest.partition(b"\r\n\r\n")
    assert sep, f"not an HTTP response (no end of headers): {raw[:300]!r}"
    lines = head.split(b"\r\n")
    status_line = lines[0].split(b" ", 2)
    assert len(status_line) >= 2 and status_line[0] in (b"HTTP/1.1", b"HTTP/1.0") and status_line[1].isdigit() \
        and len(status_line[1]) == 3, f"not an HTTP status line: {lines[0]!r}"
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        assert colon and name and name == name.strip(), f"malformed header line {line!r} in {raw[:300]!r}"
        headers[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
    body = b""
    if method != "HEAD" and status_line[1] not in (b"204", b"304"):
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = _dechunk(rest)
        elif "content-length" in headers:
            length = int(headers["content-length"])
            assert len(rest) >= length, f"body shorter than Content-Length {length}: {raw[:300]!r}"
            body = rest[:length]
        else:
            body = rest
    return RawResponse(int(status_line[1]), headers, body, raw)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, sep, data = data.partition(b"\r\n")
        assert sep, "chunked body ends without its last chunk"
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += data[:size]
        data = data[size + 2:]
