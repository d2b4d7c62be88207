"""Listening sockets for ``http.bind``: every address its host name resolves to, on one port.

Shared by the HTTP server and ``edge-ocr check`` (which tries the bind as the daemon makes it)."""

from __future__ import annotations

import errno
import socket
from typing import Any

Address = tuple[int, tuple[Any, ...]]  # (family, sockaddr)


def resolve(host: str, port: int) -> list[Address]:
    """Every distinct (family, address) ``host`` resolves to for listening: ``localhost`` is ::1
    and 127.0.0.1 on Raspberry Pi OS and Debian, ::1 first. Raises OSError (socket.gaierror)."""
    found: list[Address] = []
    for family, _kind, _proto, _name, address in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
        if (family, address) not in found:
            found.append((family, address))
    return found


def listen_sockets(addresses: list[Address]) -> list[socket.socket]:
    """Bound TCP sockets, one per address, all on one port (the first's when port 0 asks for any
    free port), address reuse on, IPv6 ones IPv6 only. Listening on the first address alone left
    a client of the other refused (``localhost:8080`` served ::1; Home Assistant asked 127.0.0.1).
    An address this machine does not have (::1 with IPv6 turned off, a common setting on a Pi) is
    skipped while another is bound. Raises the OSError of the address that failed (having closed
    the sockets made before it), or of the last when none could be bound."""
    for attempt in range(PORT_ZERO_TRIES):
        try:
            return _bind_all(addresses)
        except _PortTaken:  # port 0's pick for the first address is taken for another: pick again
            if attempt == PORT_ZERO_TRIES - 1:
                raise
    raise AssertionError("unreachable")


PORT_ZERO_TRIES = 5
MISSING_ADDRESS = (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT)


class _PortTaken(OSError):
    """The port given to the first address (port 0) is in use on a later one."""


def _bind_all(addresses: list[Address]) -> list[socket.socket]:
    sockets: list[socket.socket] = []
    port = None
    missing: OSError | None = None
    for family, address in addresses:
        picked = port is not None and address[1] == 0
        if port is not None:
            address = (address[0], port, *address[2:])
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            if exc.errno in MISSING_ADDRESS:
                missing = exc
                continue
            _close(sockets)
            raise
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart while old connections sit in TIME_WAIT
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
        except OSError as exc:
            sock.close()
            if exc.errno in MISSING_ADDRESS:
                missing = exc
                continue
            _close(sockets)
            if picked and exc.errno == errno.EADDRINUSE:
                raise _PortTaken(exc.errno, exc.strerror) from exc
            raise
        sockets.append(sock)
        port = sock.getsockname()[1]
    if not sockets:
        assert missing is not None
        raise missing
    return sockets


def _close(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()
