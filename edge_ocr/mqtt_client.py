"""One way to make a paho-mqtt 2.x client from ``[mqtt]``: TLS, credentials, and for the
daemon's own connection the LWT. Shared by the MQTT sink, the fleet worker and ``submit``.
Imports paho, config and errors."""

from __future__ import annotations

import socket
import ssl
import threading
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge_ocr.config import MqttConfig
from edge_ocr.errors import SinkError

OFFLINE = "offline"
NO_MATCHING_SUBSCRIBERS = 0x10  # a PUBACK's reason when nobody got the message (MQTT 5)


def make_client(cfg: MqttConfig, client_id: str | None = None, *, mqtt5: bool = False,
                will: bool = True, manual_ack: bool = False) -> paho.Client:
    """A paho v2 client with TLS and credentials from ``cfg`` (not connected). MQTT 3.1.1 with a
    clean session and the ``<p>/availability`` LWT for the daemon; ``mqtt5`` for the fleet, whose
    session (clean start, expiry) is set at connect."""
    if mqtt5:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or cfg.client_id,
                             protocol=paho.MQTTv5, manual_ack=manual_ack)
    else:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or cfg.client_id,
                             protocol=paho.MQTTv311, clean_session=True)
    if cfg.tls:
        try:
            client.tls_set(ca_certs=cfg.ca_file or None, certfile=cfg.cert_file or None,
                           keyfile=cfg.key_file or None, cert_reqs=ssl.CERT_REQUIRED)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise SinkError("mqtt TLS setup failed: %s" % exc) from exc
        client.tls_insecure_set(cfg.tls_insecure)
    if cfg.username:
        client.username_pw_set(cfg.username, cfg.password.reveal() if cfg.password else None)
    if will:
        client.will_set("%s/availability" % cfg.topic_prefix, OFFLINE, qos=1, retain=True)
    client.on_socket_open = _no_delay
    return client


def _no_delay(client: paho.Client, userdata: Any, sock: Any) -> None:
    """Send each packet at once (TCP_NODELAY): MQTT packets are small and mostly wait for an
    answer, and Nagle holding one until the peer's delayed ACK (40 ms on Linux) cost a fleet
    job 30-40 ms on its answer's PUBACK (bench/fleet_overhead.py; README "Fleet")."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # not TCP (a Unix socket), or a wrapper without it
        pass


def stop_loop(client: paho.Client, timeout_s: float) -> bool:
    """Stop ``client``'s network thread (``loop_stop``) within ``timeout_s``. paho joins that thread,
    which may sit in a connect to a broker that does not answer for its whole connect timeout
    (5 s): past ``timeout_s`` it is left behind (a daemon thread) so a stop keeps its budget.
    Returns False then."""
    stopper = threading.Thread(target=client.loop_stop, name="mqtt-stop", daemon=True)
    stopper.start()
    stopper.join(max(0.0, timeout_s))
    return not stopper.is_alive()
