"""Serving the app with waitress: ``HttpServer`` runs the socket loop on a thread named ``http``
and requests on ``waitress-N`` workers. waitress's own refusals (a body over its cap, a bad
request line) are answered in the API's JSON error format, and a refused upload is drained
lingeringly so clients that send the whole body first still read the 413. All waitress
subclassing lives here."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
import types
from typing import Any

import bottle
import waitress.channel
import waitress.server
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server
from waitress.task import ErrorTask

from edge_ocr.api.requests import json_body_limit
from edge_ocr.api.responses import COMMON_HEADERS, JSON_CONTENT_TYPE, mb
from edge_ocr.api.routes import AUTH_KEY, COUNT_KEY, UPLOAD_KEY
from edge_ocr.config import parse_bind, require_token_off_loopback
from edge_ocr.errors import ConfigError, SinkError
from edge_ocr.listen import listen_sockets, resolve

log = logging.getLogger(__name__)

# waitress's own cap = our largest body (base64 in JSON) + this (multipart headers): it refuses before
# buffering, so our handler answers every upload within it with our own 413.
UPLOAD_SLACK_BYTES = 1 << 20


class _JsonErrorTask(ErrorTask):
    """waitress's own refusals (body over its cap, bad request line, huge headers) as JSON."""

    def execute(self) -> None:
        err = self.request.error
        # all of waitress's refusals are about the request (400, 413, 431, 501) except its 500
        code = {413: "upload_too_large", 500: "internal"}.get(err.code, "bad_request")
        message = "%s: %s" % (err.reason, err.body)
        upload = getattr(self.channel.server, "upload_limit", None)  # set by HttpServer.start
        if err.code == 413 and upload:  # as the app words its own 413, whichever answers first
            message = "upload over the %s limit" % mb(upload)
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        self.status = "%d %s" % (err.code, err.reason)
        self.response_headers.extend([("Content-Type", JSON_CONTENT_TYPE), *COMMON_HEADERS])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)
        self.channel.linger_on_close = True  # the client may still be sending the body we refused
        count = getattr(self.channel.server, "count_status", None)  # set by HttpServer.start
        if count is not None:  # in edge_ocr_http_responses_total beside the app's own answers
            count(err.code)


LINGER_BYTES = 256 * 1024 * 1024  # a refused body read and dropped after the answer, at most


class _JsonErrorChannel(HTTPChannel):
    """waitress's channel, with its refusals as JSON and a lingering close after them.

    waitress answers 413 as soon as the headers announce a body over the cap, then closes. A
    client that sends its whole body before reading the answer (urllib, requests, Node-RED's
    http request node) would then get "connection reset by peer": the kernel resets a socket
    closed with unread data. So, as nginx and Apache do, after such an answer the channel
    shuts down its sending side and reads and drops what still arrives, until the client
    closes, ``LINGER_BYTES`` have come, or the channel times out; then it closes.
    """

    error_task_class = _JsonErrorTask
    linger_on_close = False
    _lingering = False
    _linger_left = 0
    _headers_of: Any = None  # the request whose headers are still coming in, and since when
    _headers_since = 0.0

    def received(self, data: bytes) -> bool:
        """As waitress, but a request's headers must come in within the channel timeout of their
        first byte: waitress counts idle time from the last byte, so 30 clients sending a header
        byte every 10 s (slowloris) held every connection and shut the API, /healthz included, to
        others for as long as they trickled (nginx: client_header_timeout). Bodies are not timed so:
        a 20 MB upload over a slow link takes its time."""
        taken = bool(super().received(data))
        request = self.request
        if request is not None and not request.headers_finished:
            if self._headers_of is not request:
                self._headers_of, self._headers_since = request, time.monotonic()
            self.last_activity = self._headers_since
        else:
            self._headers_of = None
        return taken

    def handle_close(self) -> None:
        if self.linger_on_close and not self._lingering and self.connected and self.socket is not None:
            try:
                self.socket.shutdown(socket.SHUT_WR)  # the answer is flushed; the client sees EOF after it
            except OSError:
                super().handle_close()
                return
            self._lingering, self._linger_left = True, LINGER_BYTES
            self.will_close = self.close_when_flushed = False
            return
        self._lingering = False
        super().handle_close()

    def readable(self) -> bool:
        return True if self._lingering else super().readable()

    def writable(self) -> bool:
        # While lingering, only the idle timeout (which sets will_close) ends the wait early.
        return self.will_close if self._lingering else super().writable()

    def handle_write(self) -> None:
        if self._lingering:
            self.handle_close()
        else:
            super().handle_write()

    def handle_read(self) -> None:
        if not self._lingering:
            super().handle_read()
            return
        try:
            data = self.recv(self.adj.recv_bytes)  # b"" once the client closes (recv closes us then)
        except OSError:
            self.handle_close()
            return
        self.last_activity = time.monotonic()  # waitress's idle clock (_idle_timing_on_monotonic_clock)
        self._linger_left -= len(data)
        if self._lingering and self._linger_left <= 0:
            self.handle_close()


def _idle_timing_on_monotonic_clock() -> None:
    """waitress times idle connections by the wall clock (``time.time()`` in its server and channel
    modules, and nowhere else): after a step back (NTP setting a Pi that booted with a stale clock) it
    closed none for as long as the step, so 32 idle clients filled ``connection_limit`` and no new
    connection, /healthz included, was taken until then. Those two modules get a ``time`` whose
    ``time()`` is the monotonic clock; the Date header comes from waitress.task, on the wall clock."""
    clock = types.SimpleNamespace(**{name: getattr(time, name) for name in dir(time) if not name.startswith("_")})
    clock.time = time.monotonic
    waitress.server.time = clock
    waitress.channel.time = clock


class HttpServer:
    """Serves a WSGI app with waitress: the socket loop in a thread named ``http``, requests
    on ``threads`` workers (``waitress-N``). Nothing runs until ``start()``.

    Raises ConfigError for a bad ``bind``, and for a non-loopback ``bind`` when the app was
    made without a token (SPEC: "Binding elsewhere requires a token").
    """

    def __init__(
        self,
        app: bottle.Bottle,
        bind: str = "127.0.0.1:8080",
        threads: int = 4,
        *,
        connection_limit: int = 32,
        channel_timeout_s: int = 30,
        cleanup_interval_s: int = 30,
    ) -> None:
        try:  # config.py refused these already; checked again at the seam, as it guards the token
            self.host, self._port = parse_bind(bind)
            require_token_off_loopback(self.host, bool(app.config.get(AUTH_KEY, False)))
        except ConfigError as exc:
            raise ConfigError("http.%s" % exc) from exc
        if threads < 1:
            raise ValueError("HttpServer: expected threads >= 1, got %d" % threads)
        self.app = app
        self.threads = threads
        self._connection_limit = connection_limit
        self._channel_timeout_s = channel_timeout_s
        self._cleanup_interval_s = cleanup_interval_s  # how often idle connections are looked for
        self._map: dict[int, Any] = {}
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._stopping = False  # stop() closed the sockets from its own thread

    @property
    def port(self) -> int:
        """The port actually bound (the real one when ``bind`` asked for port 0)."""
        return self._port

    @property
    def url(self) -> str:
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "http://%s:%d" % (host, self._port)

    def start(self) -> None:
        """Bind and serve. Raises SinkError when the address cannot be bound."""
        upload = int(self.app.config.get(UPLOAD_KEY, 20 * 1024 * 1024))
        try:  # bound first: a failure leaves no worker thread behind
            sockets = listen_sockets(resolve(self.host, self._port))
        except OSError as exc:
            raise SinkError("http: cannot listen on %s: %s" % (self.url[len("http://"):], exc.strerror or exc)) from exc
        self._port = sockets[0].getsockname()[1]
        _idle_timing_on_monotonic_clock()
        self._server = create_server(
            self.app,
            map=self._map,
            sockets=sockets,
            threads=self.threads,
            ident="edge-ocr",
            max_request_body_size=json_body_limit(upload) + UPLOAD_SLACK_BYTES,
            connection_limit=self._connection_limit,
            channel_timeout=self._channel_timeout_s,
            cleanup_interval=self._cleanup_interval_s,
            expose_tracebacks=False,
        )
        for dispatcher in list(self._map.values()):
            if isinstance(dispatcher, BaseWSGIServer):
                dispatcher.channel_class = _JsonErrorChannel
                dispatcher.count_status = self.app.config.get(COUNT_KEY)
                dispatcher.upload_limit = upload
        # waitress says "Task queue depth is N" at WARNING whenever a request waits for a thread:
        # every other request of a burst, a journal flood; busy answers and /metrics say it.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)
        self._thread.start()
        auth = bool(self.app.config.get(AUTH_KEY))
        log.info("http listening url=%s threads=%d auth=%s", self.url, self.threads, auth)

    def _run(self) -> None:
        try:
            self._server.run()
        except Exception:  # thread boundary
            if self._stopping:  # its sockets were closed under its select by stop(): expected
                log.debug("http loop ended by a stop from another thread", exc_info=True)
            else:
                log.exception("http server loop failed")

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Let running requests finish (up to ``timeout_s``), close every socket, join the loop.
        Returns False (and logs the thread name) if it did not stop in time."""
        if self._server is None or self._thread is None:
            return True
        dispatcher = next(
            (d for d in self._map.values() if isinstance(d, BaseWSGIServer)), None
        )
        requests_done = True
        if dispatcher is not None:
            dispatcher.task_dispatcher.shutdown(cancel_pending=True, timeout=timeout_s)
            # A request still running (in the engine) keeps its waitress thread: not stopped.
            requests_done = not dispatcher.task_dispatcher.threads
            # close_all must run on the loop's own thread: hand it over through waitress's trigger
            try:
                dispatcher.trigger.pull_trigger(lambda: _close_all(self._map))
            except OSError as exc:
                # Its wake-up pipe was closed under it (an fd closed twice elsewhere): close from
                # here instead; the loop then finds no socket left after its select timeout.
                log.warning("http wake-up pipe closed early, closing from the stopping thread error=%s", exc)
                self._stopping = True
                _close_all(self._map)
                # waitress half-closed the trigger when its pipe broke (out of the map, its read end
                # still open): let go of that too.
                with contextlib.suppress(OSError):
                    dispatcher.trigger.socket.close()
        self._thread.join(timeout_s)
        stopped = requests_done and not self._thread.is_alive()
        if stopped:
            log.info("http stopped")
        else:
            log.warning("http stop timed out thread=%s requests_running=%s", self._thread.name,
                        "no" if requests_done else "yes")
        return stopped


def _close_all(socket_map: dict[int, Any]) -> None:
    for dispatcher in list(socket_map.values()):
        try:
            dispatcher.close()
        except OSError:
            pass
    socket_map.clear()
