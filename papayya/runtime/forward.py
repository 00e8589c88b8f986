"""A loopback TCP port forwarded to the control plane's Unix socket.

In a container with no network (DESIGN §8) the control plane is reachable only through a
bind-mounted Unix socket, but agent code's SDKs want an HTTP base URL. This listens on
127.0.0.1 (an ephemeral port) and pipes each connection to the socket. Standard library only.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable

BUFFER = 65536


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while chunk := source.recv(BUFFER):
            target.sendall(chunk)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


def _serve(client: socket.socket, path: str) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(path)
    except OSError:
        client.close()
        upstream.close()
        return
    back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
    back.start()
    _pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _accept(
    listener: socket.socket, path: str, later: tuple[float, Callable[[], None]] | None
) -> None:
    deadline = None if later is None else time.monotonic() + later[0]
    while True:
        if deadline is not None and later is not None:
            left = deadline - time.monotonic()
            if left <= 0:  # (a timeout of 0 would make the listener non-blocking)
                listener.settimeout(None)
                deadline = None
                later[1]()
            else:
                listener.settimeout(left)
        try:
            client, _ = listener.accept()
        except TimeoutError:
            continue  # the deadline has passed: the top of the loop calls ``later``
        except OSError:
            return
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_serve, args=(client, path), daemon=True).start()


def forward(path: str, later: tuple[float, Callable[[], None]] | None = None) -> str:
    """Start forwarding; the ``http://127.0.0.1:<port>`` URL that reaches ``path``. With
    ``later`` = (seconds, fn), the forward's thread calls ``fn`` once, that many seconds from
    now (it must not block): the runtime starts its heartbeats so, and a run shorter than a
    beat needs no thread of its own for them."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    threading.Thread(target=_accept, args=(listener, path, later), daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}"
