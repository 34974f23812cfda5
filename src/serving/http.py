"""The HTTP side's own guards: a deadline for reading each request, and where the server listens.

uvicorn has a keep-alive timeout but none for reading a request: a client that sends half the
headers, or half the body, and then nothing, held its connection (and a file descriptor) for as
long as it liked (measured: still open after 75 s). :func:`timed_protocol` adds the deadline to
uvicorn's own protocol class: the whole request (headers and body) must arrive within
``read_timeout_s`` of the connection opening or of the previous response; otherwise the client
gets ``408`` and the connection is closed. A request read in full is never cut, however long its
inference takes.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
from typing import Callable

from src.core.errors import ConfigError

log = logging.getLogger(__name__)
TIMED_OUT = "grocery.read_timed_out"  # set in a request's ASGI scope when its body did not arrive in time


def _response_408(seconds: float) -> bytes:
    body = (f'{{"error":"the request was not received within {seconds:g} s","reason":"read_timeout"}}').encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def timed_protocol(base: type, read_timeout_s: float, on_timeout: Callable[[bool], None] | None = None) -> type:
    """``base`` (uvicorn's httptools or h11 protocol) with a read deadline per request.

    ``on_timeout(in_body)`` is called for each connection cut: ``in_body`` when the request's
    headers had arrived (the application sees the disconnect and counts it), else before them."""

    class TimedProtocol(base):
        _read_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()  # the next request on this connection gets a deadline of its own

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            if not self.transport.is_closing():
                self._read_timer = self.loop.call_later(read_timeout_s, self._read_timed_out)

        def _disarm(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _read_timed_out(self) -> None:
            self._read_timer = None
            cycle = self.cycle
            between = cycle is None or cycle.response_complete  # waiting for (the rest of) the next headers
            if self.transport.is_closing() or not (between or cycle.more_body):
                return  # read in full: the application is working on it
            if not between:
                cycle.scope[TIMED_OUT] = True
            if between or not cycle.response_started:
                self.transport.write(_response_408(read_timeout_s))
            self.transport.close()
            if on_timeout is not None:
                on_timeout(not between)

    TimedProtocol.__name__ = TimedProtocol.__qualname__ = f"Timed{base.__name__}"
    return TimedProtocol


def http_protocol(name: str) -> type:
    """uvicorn's protocol class for ``httptools`` or ``h11``."""
    if name == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return HttpToolsProtocol
    from uvicorn.protocols.http.h11_impl import H11Protocol

    return H11Protocol


def hostport(host: str, port: int) -> str:
    """``host:port`` with an IPv6 address in brackets (``[::]:8000``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def url(host: str, port: int) -> str:
    return f"http://{hostport(host, port)}"


def resolve(host: str, port: int) -> list[tuple]:
    """``getaddrinfo`` for a listening socket; :class:`ConfigError` naming the host when it does not resolve."""
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP,
                                  flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError(f"cannot listen on {hostport(host, port)}: the name does not resolve "
                          f"({getattr(e, 'strerror', None) or e})",
                          hint="pass `host=ADDRESS`, an address of this machine: 127.0.0.1 (this machine only), "
                               "0.0.0.0 or :: (every interface), or a name that resolves to one",
                          params=("host",)) from e


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is a loopback address (reachable from this machine only)."""
    try:
        addrs = {info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
        return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)
    except (OSError, UnicodeError, ValueError):
        return False


def exposure_warning(host: str, port: int) -> str | None:
    """The warning for a server other machines can reach (None on loopback)."""
    if is_loopback(host):
        return None
    return (f"listening on {url(host, port)}, reachable from other machines: /predict and /feedback (which writes "
            f"to the store) have no authentication. Put the server behind a reverse proxy that authenticates "
            f"(e.g. nginx with basic auth or an allow-list) and keep --host 127.0.0.1, or make sure only "
            f"trusted hosts can reach this port")


def listen(host: str, port: int):
    """The listening socket, bound here so a busy port or a bad host is one clear error (uvicorn would
    exit the process)."""
    family, _, _, _, address = resolve(host, port)[0]
    # proto spelled out: asyncio sets TCP_NODELAY only on IPPROTO_TCP sockets, and without it every response
    # waits ~40 ms for the client's delayed ACK (measured: /health 44 ms with proto 0, under 2 ms with it)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        hint = {errno.EADDRINUSE: "pick another `port` or stop what is using it",
                errno.EACCES: "ports below 1024 need privileges: pick `port=1024` or above",
                errno.EADDRNOTAVAIL: "`host` must be an address of this machine (127.0.0.1, 0.0.0.0, :: or an "
                                     "interface's address)"}.get(e.errno, "check `host` and `port`")
        raise ConfigError(f"cannot listen on {hostport(host, port)}: {e.strerror or e}", hint=hint,
                          params=("host", "port")) from e
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
