"""A TCP service that is not SMTP, for tests of what Test Connection tells about such a port.

:class:`BannerService` speaks first, as NATS does (``INFO {"server_id": ...}``), then reads
until the client leaves. It runs in threads, so a test can point a probe at it from any event
loop, or from the web console's server thread.
"""

from __future__ import annotations

import contextlib
import socket
import threading

__all__ = ["NATS_BANNER", "BannerService"]

#: What a NATS message bus sends on connect; ``NSERVERIDSECRET`` stands for its server id.
NATS_BANNER = (
    b'INFO {"server_id":"NSERVERIDSECRET","server_name":"bus-1","version":"2.10.4",'
    b'"proto":1,"host":"0.0.0.0","port":4222,"headers":true,"max_payload":1048576}\r\n'
)
#: A connection silent this long, or that sent this much, is closed.
_SERVE_SECONDS = 30.0
_SERVE_BYTES = 1 << 20


class BannerService:
    """Listen on 127.0.0.1 (a free port); send ``banner`` to every client, then read until EOF."""

    def __init__(self, banner: bytes = NATS_BANNER) -> None:
        self.banner = banner
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, name="banner-service", daemon=True)

    def __enter__(self) -> BannerService:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self._listener.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # the listener was closed: the service ends
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            client.settimeout(_SERVE_SECONDS)
            try:
                client.sendall(self.banner)
                received = 0
                while received < _SERVE_BYTES and (data := client.recv(4096)):
                    received += len(data)
            except OSError:
                return
