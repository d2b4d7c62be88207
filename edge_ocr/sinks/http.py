"""The local HTTP API of SPEC "HTTP": ``make_app()`` builds the Bottle app, ``HttpServer`` runs it.

OCR, capture, latest results, stats, metrics, readiness and the redacted config come in as
callables, so this module never sees the engine, the pipeline or the app. Imports bottle,
waitress, results, config, errors and engine.types only.

Every error is JSON ``{"error": {"code", "message"}}``; ``ERROR_STATUS`` maps each code to
its HTTP status (Bottle's and waitress's own error pages are replaced too):

    400 bad_multipart bad_json bad_base64 missing_image bad_request
    401 unauthorized (missing or wrong ``Authorization: Bearer``)
    403 forbidden_host (DNS rebinding) forbidden_origin (cross-site POST), tokenless mode only
    404 not_found unknown_source no_result          405 method_not_allowed
    413 upload_too_large                            415 unsupported_media_type unsupported_image
    422 image_too_large invalid_rois invalid_option 503 busy not_ready capture_failed
    500 internal (also a result whose error is not an ImageError)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Collection, Mapping
from importlib import resources
from io import BytesIO
from types import MappingProxyType
from typing import Any, Protocol

import bottle
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server
from waitress.task import ErrorTask

from edge_ocr.config import Secret, is_loopback, parse_bind, read_regions, require_token_off_loopback
from edge_ocr.engine.types import Region
from edge_ocr.errors import ConfigError, ImageError, SinkError
from edge_ocr.readiness import Readiness
from edge_ocr.results import Result
from edge_ocr.stats import Family, Sample, render

log = logging.getLogger(__name__)

ERROR_STATUS: Mapping[str, int] = MappingProxyType(
    {
        "bad_request": 400,
        "bad_multipart": 400,
        "bad_json": 400,
        "bad_base64": 400,
        "missing_image": 400,
        "unauthorized": 401,
        "forbidden_host": 403,
        "forbidden_origin": 403,
        "not_found": 404,
        "unknown_source": 404,
        "no_result": 404,
        "method_not_allowed": 405,
        "upload_too_large": 413,
        "unsupported_media_type": 415,
        "unsupported_image": 415,
        "image_too_large": 422,
        "invalid_rois": 422,
        "invalid_option": 422,
        "image": 422,  # an ImageError without a more specific subclass
        "internal": 500,
        "busy": 503,
        "not_ready": 503,
        "capture_failed": 503,
    }
)
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"
MAX_ROIS = 64
UPLOAD_SLACK_BYTES = 1 << 20  # waitress's own cap = ours + this (multipart headers): it refuses before buffering
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
AUTH_KEY = "edge_ocr.token_required"  # app.config keys HttpServer reads back
UPLOAD_KEY = "edge_ocr.max_upload_bytes"
COMMON_HEADERS = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"))


class ApiBackend(Protocol):
    """What the HTTP API needs from the daemon: one typed seam, which the daemon (App) and the
    API's tests both implement."""

    def ocr(self, image: bytes, *, det: bool, rois: tuple[Region, ...]) -> Result:
        """OCR one uploaded image. Raises ImageError for a bad image and TimeoutError when the
        work cannot be scheduled in time (→ 503 busy); may instead return a Result whose
        ``error`` is set (an ImageError maps to its 4xx, anything else to 500)."""

    def capture(self, source: str | None) -> tuple[bool, str]:
        """Take an image now from ``source`` (None: every source): ``(ok, message)``."""

    def latest(self, source: str | None) -> Result | None:
        """The newest result of ``source``, or of any source for None."""

    def source_names(self) -> Collection[str]:
        """The names /api/latest/<s> and /api/capture/<s> accept."""

    def stats_view(self) -> Mapping[str, Any]:
        """GET /api/stats."""

    def metrics_text(self) -> str:
        """The daemon's part of GET /metrics (Prometheus text)."""

    def readiness(self) -> Readiness:
        """GET /readyz."""

    def config_view(self) -> Mapping[str, Any]:
        """GET /api/config: the config as JSON, secrets masked."""

    def accepting(self) -> bool:
        """False at the memory guard's hard level: OCR is refused with 503 not_ready."""


class _ApiError(Exception):
    """Raised inside a handler: becomes a JSON error response with the status of ``code``."""

    def __init__(self, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def make_app(
    backend: ApiBackend,
    *,
    token: str | Secret | None = None,
    max_upload_mb: float = 20.0,
    ocr_slots: int = 2,
    busy_timeout_s: float = 2.0,
) -> bottle.Bottle:
    """The Bottle app of SPEC "HTTP" over ``backend``; a new private ``Bottle()`` per call.

    ``token`` set: every route but /healthz and the static page needs ``Bearer <token>``.
    At most ``ocr_slots`` OCR calls run at once; a request that waits ``busy_timeout_s`` for
    a slot gets 503 ``busy``. Raises ValueError for unusable arguments (config.py checked the
    user's keys already).
    """
    if max_upload_mb <= 0 or ocr_slots < 1:
        raise ValueError("make_app: expected max_upload_mb > 0 and ocr_slots >= 1")
    secret = token.reveal() if isinstance(token, Secret) else token
    if secret is not None and not secret.strip():
        raise ValueError("make_app: the token is empty")
    api = _Api(
        backend,
        token=secret.strip().encode() if secret is not None else None,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        ocr_slots=ocr_slots,
        busy_timeout_s=busy_timeout_s,
    )
    return api.app


class _Api:
    """The routes, the access plugin and the OCR slots of one app (glances' layout: one
    private Bottle, all routes in ``_route()``, auth installed once as a plugin)."""

    def __init__(
        self,
        backend: ApiBackend,
        *,
        token: bytes | None,
        max_upload_bytes: int,
        ocr_slots: int,
        busy_timeout_s: float,
    ) -> None:
        self._backend = backend
        self._max_upload = max_upload_bytes
        self._slots = threading.BoundedSemaphore(ocr_slots)
        self._busy_timeout_s = busy_timeout_s
        self._counts_lock = threading.Lock()
        self._responses: dict[int, int] = {}
        self._busy = 0
        self._page, self._page_csp = _load_page()
        self.app = bottle.Bottle()
        self.app.config[AUTH_KEY] = token is not None
        self.app.config[UPLOAD_KEY] = max_upload_bytes
        self.app.install(_AccessPlugin(token))
        self.app.add_hook("after_request", self._count)
        # every Bottle error (no route, wrong method, a crash outside the plugin) as JSON
        self.app.default_error_handler = self._bottle_error
        self._route()

    def _route(self) -> None:
        app = self.app
        app.route("/healthz", "GET", self.healthz, public=True)
        app.route("/", "GET", self.page, public=True)  # static page, no data: the browser cannot send a header
        app.route("/readyz", "GET", self.readyz)
        app.route("/metrics", "GET", self.metrics)
        app.route("/api/stats", "GET", self.stats)
        app.route("/api/config", "GET", self.config)
        app.route("/api/latest", "GET", self.latest)
        app.route("/api/latest/<source>", "GET", self.latest)
        app.route("/api/capture", "POST", self.capture)
        app.route("/api/capture/<source>", "POST", self.capture)
        app.route("/api/ocr", "POST", self.ocr)

    # -- read-only endpoints ---------------------------------------------------------------------

    def healthz(self) -> bottle.HTTPResponse:
        return _json(200, {"status": "ok"})

    def page(self) -> bottle.HTTPResponse:
        headers = {
            "Content-Type": "text/html; charset=utf-8",
            "Content-Security-Policy": self._page_csp,
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
        }
        return _response(200, self._page, headers)

    def readyz(self) -> bottle.HTTPResponse:
        readiness = self._backend.readiness()
        body = readiness.to_json()
        if not readiness.ready:
            body["error"] = {"code": "not_ready", "message": readiness.reason}
        return _json(200 if readiness.ready else 503, body)

    def metrics(self) -> bottle.HTTPResponse:
        text = self._backend.metrics_text()
        if text and not text.endswith("\n"):
            text += "\n"
        return _response(200, text + self._own_metrics(), {"Content-Type": METRICS_CONTENT_TYPE})

    def stats(self) -> bottle.HTTPResponse:
        return _json(200, self._backend.stats_view())

    def config(self) -> bottle.HTTPResponse:
        return _json(200, self._backend.config_view())

    def latest(self, source: str | None = None) -> bottle.HTTPResponse:
        if source is not None:
            self._known_source(source)
        result = self._backend.latest(source)
        if result is None:
            where = "source %r" % source if source is not None else "any source"
            raise _ApiError("no_result", "no result yet for %s" % where)
        return _response(200, result.to_json(), {"Content-Type": JSON_CONTENT_TYPE})

    # -- commands ----------------------------------------------------------------------------------

    def capture(self, source: str | None = None) -> bottle.HTTPResponse:
        if source is not None:
            self._known_source(source)
        ok, message = self._backend.capture(source)
        if not ok:
            raise _ApiError("capture_failed", message)
        return _json(200, {"ok": True, "source": source, "message": message})

    def ocr(self) -> bottle.HTTPResponse:
        if not self._backend.accepting():
            raise _ApiError("not_ready", "not taking work now (memory guard)", {"Retry-After": "5"})
        image, det, rois = self._ocr_request()
        if not self._slots.acquire(timeout=self._busy_timeout_s):
            self._count_busy()
            raise _ApiError("busy", "all OCR slots are busy, retry shortly", {"Retry-After": "1"})
        try:
            result = self._backend.ocr(image, det=det, rois=rois)
        except ImageError as exc:
            log.debug("http ocr refused image error=%s", exc.code)
            raise _ApiError(exc.code if exc.code in ERROR_STATUS else "image", exc.message) from exc
        except TimeoutError as exc:
            self._count_busy()
            raise _ApiError("busy", "the OCR queue is full, retry shortly", {"Retry-After": "1"}) from exc
        finally:
            self._slots.release()
        status = 200
        if result.error is not None:
            status = ERROR_STATUS.get(result.error.code, 422) if isinstance(result.error, ImageError) else 500
        log.debug("http ocr status=%d bytes=%d det=%s rois=%d", status, len(image), det, len(rois))
        return _response(status, result.to_json(), {"Content-Type": JSON_CONTENT_TYPE})

    # -- request parsing ---------------------------------------------------------------------------

    def _ocr_request(self) -> tuple[bytes, bool, tuple[Region, ...]]:
        """The image bytes and options of POST /api/ocr; raises _ApiError 400/413/415/422."""
        req = bottle.request
        kind = (req.content_type or "").split(";", 1)[0].strip().lower()
        if req.content_length > self._max_upload:
            raise _ApiError("upload_too_large", "upload over the %s limit" % _mb(self._max_upload))
        is_json = kind == "application/json" or kind.endswith("+json")
        is_raw = kind.startswith("image/") or kind == "application/octet-stream"
        if not (is_json or is_raw or kind == "multipart/form-data"):
            raise _ApiError(
                "unsupported_media_type",
                "expected multipart/form-data with an 'image' file, an image/* body or application/json, got %s"
                % (kind or "no content type"),
            )
        body = self._read_body()
        det_raw: Any = req.query.get("det")
        rois_raw: Any = req.query.get("rois")
        if is_json:
            image, det_raw, rois_raw = _json_image(body, det_raw, rois_raw)
        elif is_raw:
            image = body
        else:
            image, det_raw, rois_raw = _multipart_image(req.environ, body, det_raw, rois_raw)
        if not image:
            raise _ApiError("missing_image", "the image is empty")
        return image, _det_option(det_raw), _rois_option(rois_raw)

    def _read_body(self) -> bytes:
        """At most ``max_upload`` bytes of the request body (Content-Length was checked)."""
        length = bottle.request.content_length
        if length <= 0:
            return b""
        stream = bottle.request.environ["wsgi.input"]
        chunks: list[bytes] = []
        remaining = length
        while remaining > 0:
            chunk = stream.read(min(remaining, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    # -- helpers -----------------------------------------------------------------------------------

    def _known_source(self, source: str) -> None:
        if source not in self._backend.source_names():
            raise _ApiError("unknown_source", "no source named %r" % source)

    def _bottle_error(self, err: bottle.HTTPError) -> bottle.HTTPResponse:
        """Bottle's own errors (no route, wrong method, a crash outside our plugin) as JSON."""
        status = err.status_code
        code = {404: "not_found", 405: "method_not_allowed", 413: "upload_too_large"}.get(
            status, "bad_request" if 400 <= status < 500 else "internal"
        )
        message = {
            404: "no such endpoint: %s %s" % (bottle.request.method, bottle.request.path),
            405: "method %s not allowed here" % bottle.request.method,
        }.get(status, "internal server error" if status >= 500 else str(err.body or err.status_line))
        extra = {"Allow": err.headers["Allow"]} if "Allow" in err.headers else {}
        return _error(status, code, message, extra)

    def _count(self) -> None:
        with self._counts_lock:
            status = bottle.response.status_code
            self._responses[status] = self._responses.get(status, 0) + 1

    def _count_busy(self) -> None:
        with self._counts_lock:
            self._busy += 1

    def _own_metrics(self) -> str:
        with self._counts_lock:
            responses = sorted(self._responses.items())
            busy = self._busy
        return render([
            Family("http_responses_total", "counter", "responses", "HTTP responses by status",
                   tuple(Sample(n, (("code", str(status)),)) for status, n in responses)),
            Family("http_ocr_busy_total", "counter", "requests", "OCR requests refused because every slot was busy",
                   (Sample(busy),)),
        ])


class _AccessPlugin:
    """Installed once on the app, so no route can forget it: the token check (every route not
    marked ``public``), the Host/Origin checks of tokenless (loopback-only) mode, and the
    request boundary where _ApiError becomes JSON and a crash becomes a logged 500."""

    name = "edge_ocr_access"
    api = 2

    def __init__(self, token: bytes | None) -> None:
        self._token = token

    def apply(self, callback: Callable[..., Any], route: bottle.Route) -> Callable[..., Any]:
        public = bool(route.config.get("public", False))

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                if self._token is None:
                    _check_local_request()
                elif not public:
                    self._check_token()
                return callback(*args, **kwargs)
            except _ApiError as exc:
                log.debug("http refused path=%s code=%s", bottle.request.path, exc.code)
                return _error(ERROR_STATUS[exc.code], exc.code, exc.message, exc.headers)
            except bottle.HTTPResponse:
                raise
            except Exception:  # request boundary: one bad request never takes the server down
                log.exception("http handler failed method=%s path=%s", bottle.request.method, bottle.request.path)
                return _error(500, "internal", "internal server error")

        return wrapper

    def _check_token(self) -> None:
        assert self._token is not None
        challenge = {"WWW-Authenticate": 'Bearer realm="edge-ocr"'}
        scheme, _, given = bottle.request.get_header("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise _ApiError("unauthorized", "this endpoint needs 'Authorization: Bearer <token>'", challenge)
        if not hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), self._token):
            raise _ApiError("unauthorized", "invalid token", challenge)


def _check_local_request() -> None:
    """Tokenless mode serves loopback only: refuse a foreign Host (DNS rebinding) and a POST
    whose Origin is another site (CSRF from a page the local user happens to visit)."""
    host = bottle.request.get_header("Host", "")
    if host and not is_loopback(_split_host(host)):
        raise _ApiError("forbidden_host", "Host %r is not this device's loopback address" % host[:100])
    origin = bottle.request.get_header("Origin")
    if bottle.request.method == "POST" and origin is not None and origin != "null":
        netloc = origin.split("://", 1)[-1]
        if netloc != host:
            raise _ApiError("forbidden_origin", "cross-site request refused")


def _json_image(body: bytes, det: Any, rois: Any) -> tuple[bytes, Any, Any]:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _ApiError("bad_json", "body is not valid JSON: %s" % exc) from exc
    if not isinstance(data, dict):
        raise _ApiError("bad_json", 'expected a JSON object {"image": "<base64>", ...}')
    unknown = sorted(set(data) - {"image", "det", "rois"})
    if unknown:
        raise _ApiError("invalid_option", "unknown key(s): %s" % ", ".join(unknown))
    encoded = data.get("image")
    if encoded is None or encoded == "":
        raise _ApiError("missing_image", 'expected "image": base64 of the image file')
    if not isinstance(encoded, str):
        raise _ApiError("bad_base64", '"image" must be a base64 string')
    if encoded.startswith("data:"):  # a data: URL as a browser's FileReader makes it
        encoded = encoded.partition(",")[2]
    try:
        image = base64.b64decode(re.sub(r"\s+", "", encoded), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _ApiError("bad_base64", '"image" is not valid base64: %s' % exc) from exc
    return image, data.get("det", det), data.get("rois", rois)


class _InMemoryRequest(bottle.BaseRequest):
    """A request over a body we already read (and capped): multipart parts stay in memory
    instead of Bottle's temp files (SD cards wear)."""

    __slots__ = ()
    MEMFILE_MAX = 1 << 40


def _multipart_image(environ: dict[str, Any], body: bytes, det: Any, rois: Any) -> tuple[bytes, Any, Any]:
    environ["CONTENT_LENGTH"] = str(len(body))
    environ["bottle.request.body"] = BytesIO(body)
    try:
        form = _InMemoryRequest(environ).POST
        upload = form.get("image")
        det = form.get("det", det)
        rois = form.get("rois", rois)
    except bottle.MultipartError as exc:
        message = str(exc.body).removeprefix("MultipartError: ")
        raise _ApiError("bad_multipart", "broken multipart body: %s" % message) from exc
    except UnicodeDecodeError as exc:  # a binary part sent without a filename
        raise _ApiError("bad_multipart", "send the image as a file part (with a filename)") from exc
    if upload is None:
        raise _ApiError("missing_image", "expected a multipart file field named 'image'")
    if isinstance(upload, bottle.FileUpload):
        try:
            return upload.file.read(), det, rois
        finally:
            upload.file.close()
    return str(upload).encode("utf-8"), det, rois


def _det_option(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise _ApiError("invalid_option", "det: expected 0 or 1 (true/false), got %s" % _show(value))


def _rois_option(value: Any) -> tuple[Region, ...]:
    """Parse ``rois``: a list (or its JSON text) of ``{name, box: [x, y, w, h], allowed_chars}``,
    by the same rules as a camera's ``rois`` in the config."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise _ApiError("invalid_rois", "rois: not valid JSON: %s" % exc) from exc
    try:
        return read_regions(value, "rois", ("name", "box", "allowed_chars"), MAX_ROIS)
    except ConfigError as exc:
        raise _ApiError("invalid_rois", str(exc)) from exc


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _mb(n: int) -> str:
    return "%g MB" % round(n / (1024 * 1024), 2)


def _response(status: int, body: str | bytes, headers: Mapping[str, str]) -> bottle.HTTPResponse:
    all_headers = dict(COMMON_HEADERS)
    all_headers.update(headers)
    return bottle.HTTPResponse(body=body, status=status, headers=all_headers)


def _json(status: int, data: Mapping[str, Any]) -> bottle.HTTPResponse:
    # default=str: paths and enums in the injected mappings serialise as their text
    return _response(status, json.dumps(data, default=str, separators=(",", ":")), {"Content-Type": JSON_CONTENT_TYPE})


def _error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> bottle.HTTPResponse:
    body = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":"))
    return _response(status, body, {"Content-Type": JSON_CONTENT_TYPE, **(headers or {})})


def _load_page() -> tuple[str, str]:
    """The try-it page and a Content-Security-Policy allowing exactly its inline script and style."""
    html = resources.files("edge_ocr.sinks").joinpath("page.html").read_text(encoding="utf-8")

    def hashes(tag: str) -> str:
        bodies = re.findall(r"<%s>(.*?)</%s>" % (tag, tag), html, flags=re.DOTALL)
        return " ".join(
            "'sha256-%s'" % base64.b64encode(hashlib.sha256(b.encode("utf-8")).digest()).decode() for b in bodies
        )

    csp = (
        "default-src 'none'; script-src %s; style-src %s; img-src blob: data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'" % (hashes("script"), hashes("style"))
    )
    return html, csp


# -- the server ----------------------------------------------------------------------------------------


def _split_host(header: str) -> str:
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


class _JsonErrorTask(ErrorTask):
    """waitress's own refusals (body over its cap, bad request line, huge headers) as JSON."""

    def execute(self) -> None:
        err = self.request.error
        # all of waitress's refusals are about the request (400, 413, 431, 501) except its 500
        code = {413: "upload_too_large", 500: "internal"}.get(err.code, "bad_request")
        body = json.dumps({"error": {"code": code, "message": "%s: %s" % (err.reason, err.body)}}).encode()
        self.status = "%d %s" % (err.code, err.reason)
        self.response_headers.extend([("Content-Type", JSON_CONTENT_TYPE), *COMMON_HEADERS])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)
        self.channel.linger_on_close = True  # the client may still be sending the body we refused


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
        self.last_activity = time.time()
        self._linger_left -= len(data)
        if self._lingering and self._linger_left <= 0:
            self.handle_close()


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
        self._map: dict[int, Any] = {}
        self._server: Any = None
        self._thread: threading.Thread | None = None

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
        sock = _listen_socket(self.host, self._port)  # bound first: a failure leaves no worker thread behind
        self._port = sock.getsockname()[1]
        self._server = create_server(
            self.app,
            map=self._map,
            sockets=[sock],
            threads=self.threads,
            ident="edge-ocr",
            max_request_body_size=upload + UPLOAD_SLACK_BYTES,
            connection_limit=self._connection_limit,
            channel_timeout=self._channel_timeout_s,
            expose_tracebacks=False,
        )
        for dispatcher in list(self._map.values()):
            if isinstance(dispatcher, BaseWSGIServer):
                dispatcher.channel_class = _JsonErrorChannel
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)
        self._thread.start()
        auth = bool(self.app.config.get(AUTH_KEY))
        log.info("http listening url=%s threads=%d auth=%s", self.url, self.threads, auth)

    def _run(self) -> None:
        try:
            self._server.run()
        except Exception:  # thread boundary
            log.exception("http server loop failed")

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Let running requests finish (up to ``timeout_s``), close every socket, join the loop.
        Returns False (and logs the thread name) if it did not stop in time."""
        if self._server is None or self._thread is None:
            return True
        dispatcher = next(
            (d for d in self._map.values() if isinstance(d, BaseWSGIServer)), None
        )
        if dispatcher is not None:
            dispatcher.task_dispatcher.shutdown(cancel_pending=True, timeout=timeout_s)
            # close_all must run on the loop's own thread: hand it over through waitress's trigger
            dispatcher.trigger.pull_trigger(lambda: _close_all(self._map))
        self._thread.join(timeout_s)
        stopped = not self._thread.is_alive()
        if stopped:
            log.info("http stopped")
        else:
            log.warning("http stop timed out thread=%s", self._thread.name)
        return stopped


def _listen_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for ``host:port`` (the first address the name resolves to)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise SinkError("http: cannot listen on %s:%d: %s" % (host, port, exc.strerror or exc)) from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart while old connections sit in TIME_WAIT
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise SinkError("http: cannot listen on %s:%d: %s" % (host, port, exc.strerror or exc)) from exc
    return sock


def _close_all(socket_map: dict[int, Any]) -> None:
    for dispatcher in list(socket_map.values()):
        try:
            dispatcher.close()
        except OSError:
            pass
    socket_map.clear()


__all__ = ["ERROR_STATUS", "ApiBackend", "HttpServer", "make_app"]
