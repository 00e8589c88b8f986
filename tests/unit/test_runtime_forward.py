"""The runtime's loopback forward calls its ``later`` function once, when due, and goes on
forwarding afterwards (the runtime starts its heartbeats so)."""

from __future__ import annotations

import socket
import threading
import urllib.parse
from pathlib import Path

from papayya.runtime.forward import forward


def test_later_is_called_once_when_due_and_the_forward_still_serves(tmp_path: Path) -> None:
    path = str(tmp_path / "control.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    calls: list[int] = []
    due = threading.Event()

    def later() -> None:
        calls.append(1)
        due.set()

    url = forward(path, (0.05, later))
    assert due.wait(5)
    port = urllib.parse.urlsplit(url).port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        upstream, _ = server.accept()
        client.sendall(b"ping")
        assert upstream.recv(4) == b"ping"
        upstream.sendall(b"pong")
        assert client.recv(4) == b"pong"
        upstream.close()
    assert calls == [1]
    server.close()
