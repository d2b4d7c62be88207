"""sd_notify over ``$NOTIFY_SOCKET`` (a datagram): READY=1, STATUS=, STOPPING=1, WATCHDOG=1.

A no-op when the daemon is not run by systemd with Type=notify. stdlib only.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages; ``watchdog_s`` is half of ``$WATCHDOG_USEC`` (0 = no watchdog)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # An abstract socket is spelt with a leading '@' (sd_notify(3)).
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        self.watchdog_s = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, message: str) -> bool:
        """Send one message; False (logged at DEBUG) when there is no socket or it fails."""
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall(message.encode("utf-8"))
            return True
        except OSError as exc:
            log.debug("sd_notify failed error=%s", exc)
            return False

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1" + ("\nSTATUS=%s" % status if status else ""))

    def status(self, text: str) -> bool:
        return self.send("STATUS=%s" % text)

    def stopping(self) -> bool:
        return self.send("STOPPING=1\nSTATUS=stopping")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")
