"""Listening sockets for ``http.bind``: every address its host name resolves to, on one port.

Shared by the HTTP server and ``edge-ocr check`` (which tries the bind as the daemon makes it)."""

from __future__ import annotations

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
    Raises the OSError of the address that failed, having closed the sockets made before it."""
    sockets: list[socket.socket] = []
    port = None
    try:
        for family, address in addresses:
            if port is not None:
                address = (address[0], port, *address[2:])
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart while old connections sit in TIME_WAIT
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            port = sock.getsockname()[1]
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets
