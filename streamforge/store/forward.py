"""A TCP forwarder: the one port of the embedded store that browsers reach.

SeaweedFS binds every one of its ports (master, volume, filer, admin, gRPC, metrics) to one
address; the store runs on 127.0.0.1 and this forwarder relays the S3 port alone to where the
browsers are. The bytes pass unchanged, the Host header included, so a SigV4 signature made for the
host the browser uses verifies at the store.
"""
from __future__ import annotations

import contextlib
import logging
import socket
import threading

log = logging.getLogger(__name__)

_CHUNK = 256 * 1024


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class PortForwarder:
    """Listen on `listen` (host, port) and relay each connection to `target` (host, port)."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.listen = listen
        self.target = target
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    def running(self) -> bool:
        """True while the listening socket is open."""
        return self._sock is not None

    def start(self) -> None:
        """Bind and listen (OSError when the port is taken), then accept in a daemon thread."""
        if self._sock is not None:
            return
        host, port = self.listen
        sock = socket.socket(_family(host), socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        sock.settimeout(0.5)
        self._stop.clear()
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, args=(sock,), daemon=True,
                                        name=f"sf-forward-{port}")
        self._thread.start()

    def stop(self) -> None:
        """Close the listening socket and every relayed connection."""
        self._stop.set()
        sock, self._sock = self._sock, None
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        if sock is not None:
            sock.close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept_loop(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            threading.Thread(target=self._relay, args=(client,), daemon=True, name="sf-forward-conn").start()

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError as e:
            log.warning("S3 forwarder: the store at %s:%d does not answer: %s", *self.target, e)
            client.close()
            return
        for s in (client, upstream):
            s.settimeout(None)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            if self._stop.is_set():
                client.close()
                upstream.close()
                return
            self._conns.update((client, upstream))
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True, name="sf-forward-back")
        back.start()
        _pump(client, upstream)
        back.join()
        with self._lock:
            self._conns.discard(client)
            self._conns.discard(upstream)
        client.close()
        upstream.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy src to dst until src ends, then end dst's writing side."""
    buf = memoryview(bytearray(_CHUNK))
    try:
        while True:
            n = src.recv_into(buf)
            if not n:
                break
            dst.sendall(buf[:n])
    except OSError:
        # a reset on one side ends both directions
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        return
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)
