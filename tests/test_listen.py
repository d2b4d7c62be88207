"""edge_ocr.listen: the sockets ``http.bind`` listens on, real ones on loopback."""

from __future__ import annotations

import socket

import pytest

from edge_ocr.listen import listen_sockets, resolve


def test_a_name_resolves_to_each_of_its_addresses_once():
    assert resolve("127.0.0.1", 8080) == [(socket.AF_INET, ("127.0.0.1", 8080))]
    assert resolve("::1", 0) == [(socket.AF_INET6, ("::1", 0, 0, 0))]


def test_every_address_listens_on_the_port_the_first_was_given():
    sockets = listen_sockets([(socket.AF_INET6, ("::1", 0, 0, 0)), (socket.AF_INET, ("127.0.0.1", 0))])
    try:
        ports = {sock.getsockname()[1] for sock in sockets}
        assert len(sockets) == 2 and len(ports) == 1
        assert sockets[0].getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    finally:
        for sock in sockets:
            sock.close()


def test_an_address_another_program_holds_raises_and_closes_the_sockets_made_before_it():
    with socket.socket(socket.AF_INET) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as raised:
            listen_sockets([(socket.AF_INET6, ("::1", port, 0, 0)), (socket.AF_INET, ("127.0.0.1", port))])
        assert raised.value.errno == 98  # EADDRINUSE
        with socket.socket(socket.AF_INET6) as again:  # the ::1 socket made first was closed
            again.bind(("::1", port))


def test_an_address_this_machine_lacks_is_skipped_while_another_is_bound():
    """``localhost`` is ::1 and 127.0.0.1 in Debian's /etc/hosts even with IPv6 turned off (a
    common setting on a Pi): ::1 then cannot be bound, and the daemon must start on 127.0.0.1.
    192.0.2.1 (a documentation address) stands for it here: no interface has it."""
    sockets = listen_sockets([(socket.AF_INET, ("192.0.2.1", 0)), (socket.AF_INET, ("127.0.0.1", 0))])
    try:
        assert [sock.getsockname()[0] for sock in sockets] == ["127.0.0.1"]
    finally:
        for sock in sockets:
            sock.close()
    with pytest.raises(OSError) as raised:  # none at all: the reason is the missing address's
        listen_sockets([(socket.AF_INET, ("192.0.2.1", 0))])
    assert raised.value.errno == 99  # EADDRNOTAVAIL
