"""HTTP/1.1 by hand over a socket, for what httpx cannot do: send a request's headers and
only part (or none) of the body it declares, then read the answer while the rest is owed."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import orjson


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> dict:
        return orjson.loads(self.body)


def head(method: str, path: str, headers: dict[str, str], content_length: int) -> bytes:
    """The request line and headers, declaring ``content_length`` body bytes."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1",
             f"Content-Length: {content_length}",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_response(sock: socket.socket, timeout: float) -> RawResponse:
    """One whole response (Content-Length framed); socket.timeout when none comes in time,
    ConnectionError when the server closes or resets instead."""
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += receive(sock)
    top, _, body = buf.partition(b"\r\n\r\n")
    status_line, *header_lines = top.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip()
               for k, _, v in (line.partition(":") for line in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        body += receive(sock)
    return RawResponse(int(status_line.split()[1]), headers, body[:length])


def receive(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError("the server closed the connection before a whole response")
    return chunk
