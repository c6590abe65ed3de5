"""Loopback ports whose behaviour a test relies on, made rather than assumed
(port 1 is only assumed closed)."""

from __future__ import annotations

import socket


class UnusedServer:
    """A listening loopback socket that never accepts: the URL of a server
    that must never be contacted. A client that connects anyway does not
    fail fast (the kernel completes the handshake) but is counted by
    connections(), which the test asserts to be 0."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0), backlog=16)
        self._sock.setblocking(False)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self._seen = 0

    def connections(self) -> int:
        """Connections made so far (each taken off the queue and closed)."""
        while True:
            try:
                conn, _ = self._sock.accept()
            except BlockingIOError:
                return self._seen
            conn.close()
            self._seen += 1

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "UnusedServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def closed_port() -> int:
    """A loopback port nobody listens on (bound by the kernel's choice, then
    closed): a connection to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
