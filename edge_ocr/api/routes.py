"""The routes of SPEC "HTTP" over an ApiBackend: ``make_app()`` builds a private Bottle app with
every route, the access plugin and the OCR slots. It never sees the engine, the pipeline or the
daemon, only the backend's methods."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import threading
from importlib import resources

import bottle

from edge_ocr.api.access import AccessPlugin
from edge_ocr.api.backend import ApiBackend
from edge_ocr.api.requests import read_ocr_request
from edge_ocr.api.responses import (
    ERROR_STATUS,
    JSON_CONTENT_TYPE,
    METRICS_CONTENT_TYPE,
    ApiError,
    error_response,
    json_response,
    response,
)
from edge_ocr.config import Secret
from edge_ocr.errors import ImageError
from edge_ocr.stats import Family, Sample, render

log = logging.getLogger(__name__)

AUTH_KEY = "edge_ocr.token_required"  # app.config keys the server reads back
UPLOAD_KEY = "edge_ocr.max_upload_bytes"
COUNT_KEY = "edge_ocr.count_status"  # counts a response the server answered itself (waitress's refusals)


def make_app(
    backend: ApiBackend,
    *,
    token: str | Secret | None = None,
    max_upload_mb: float = 20.0,
    ocr_slots: int = 2,
    ocr_waiting: int = 1,
    busy_timeout_s: float = 2.0,
) -> bottle.Bottle:
    """The Bottle app of SPEC "HTTP" over ``backend``; a new private ``Bottle()`` per call.

    ``token`` set: every route but /healthz and the static page needs ``Bearer <token>``.
    At most ``ocr_slots`` OCR calls run at once and ``ocr_waiting`` more wait for a slot, at most
    ``busy_timeout_s``; any other gets 503 ``busy`` at once. A waiting request holds one of the
    server's threads, so with HttpServer's 4 (2 reading, 1 waiting) one is always left for
    /healthz and the rest. Raises ValueError for unusable arguments (config.py checked the
    user's keys already).
    """
    if max_upload_mb <= 0 or ocr_slots < 1 or ocr_waiting < 0:
        raise ValueError("make_app: expected max_upload_mb > 0, ocr_slots >= 1 and ocr_waiting >= 0")
    secret = token.reveal() if isinstance(token, Secret) else token
    if secret is not None and not secret.strip():
        raise ValueError("make_app: the token is empty")
    api = _Api(
        backend,
        token=secret.strip().encode() if secret is not None else None,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        ocr_slots=ocr_slots,
        ocr_waiting=ocr_waiting,
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
        ocr_waiting: int,
        busy_timeout_s: float,
    ) -> None:
        self._backend = backend
        self._max_upload = max_upload_bytes
        self._slots = threading.BoundedSemaphore(ocr_slots)
        self._busy_timeout_s = busy_timeout_s
        self._max_waiting = ocr_waiting
        self._waiting = 0  # requests waiting for a slot, under _counts_lock
        self._counts_lock = threading.Lock()
        self._responses: dict[int, int] = {}
        self._busy = 0
        self._page, self._page_csp = _load_page()
        self.app = bottle.Bottle()
        self.app.config[AUTH_KEY] = token is not None
        self.app.config[UPLOAD_KEY] = max_upload_bytes
        self.app.config[COUNT_KEY] = self._count_status
        self.app.install(AccessPlugin(token))
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
        return json_response(200, {"status": "ok"})

    def page(self) -> bottle.HTTPResponse:
        headers = {
            "Content-Type": "text/html; charset=utf-8",
            "Content-Security-Policy": self._page_csp,
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
        }
        return response(200, self._page, headers)

    def readyz(self) -> bottle.HTTPResponse:
        readiness = self._backend.readiness()
        body = readiness.to_json()
        if not readiness.ready:
            body["error"] = {"code": "not_ready", "message": readiness.reason}
        return json_response(200 if readiness.ready else 503, body)

    def metrics(self) -> bottle.HTTPResponse:
        text = self._backend.metrics_text()
        if text and not text.endswith("\n"):
            text += "\n"
        return response(200, text + self._own_metrics(), {"Content-Type": METRICS_CONTENT_TYPE})

    def stats(self) -> bottle.HTTPResponse:
        return json_response(200, self._backend.stats_view())

    def config(self) -> bottle.HTTPResponse:
        return json_response(200, self._backend.config_view())

    def latest(self, source: str | None = None) -> bottle.HTTPResponse:
        if source is not None:
            self._known_source(source)
        result = self._backend.latest(source)
        if result is None:
            where = "source %r" % source if source is not None else "any source"
            raise ApiError("no_result", "no result yet for %s" % where)
        return response(200, result.to_json(), {"Content-Type": JSON_CONTENT_TYPE})

    # -- commands ----------------------------------------------------------------------------------

    def capture(self, source: str | None = None) -> bottle.HTTPResponse:
        if source is not None:
            self._known_source(source)
        ok, message = self._backend.capture(source)
        if not ok:
            raise ApiError("capture_failed", message)
        return json_response(200, {"ok": True, "source": source, "message": message})

    def ocr(self) -> bottle.HTTPResponse:
        if not self._backend.accepting():
            raise ApiError("not_ready", "not taking work now (memory guard)", {"Retry-After": "5"})
        image, det, rois = read_ocr_request(self._max_upload)
        if not self._take_slot():
            self._count_busy()
            raise ApiError("busy", "all OCR slots are busy, retry shortly", {"Retry-After": "1"})
        try:
            result = self._backend.ocr(image, det=det, rois=rois)
        except ImageError as exc:
            log.debug("http ocr refused image error=%s", exc.code)
            raise ApiError(exc.code if exc.code in ERROR_STATUS else "image", exc.message) from exc
        except TimeoutError as exc:
            self._count_busy()
            raise ApiError("busy", "the OCR queue is full, retry shortly", {"Retry-After": "1"}) from exc
        finally:
            self._slots.release()
        status = 200
        if result.error is not None:
            status = ERROR_STATUS.get(result.error.code, 422) if isinstance(result.error, ImageError) else 500
        log.debug("http ocr status=%d bytes=%d det=%s rois=%d", status, len(image), det, len(rois))
        return response(status, result.to_json(), {"Content-Type": JSON_CONTENT_TYPE})

    # -- helpers -----------------------------------------------------------------------------------

    def _known_source(self, source: str) -> None:
        if source not in self._backend.source_names():
            raise ApiError("unknown_source", "no source named %r" % source)

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
        return error_response(status, code, message, extra)

    def _count(self) -> None:
        self._count_status(bottle.response.status_code)

    def _count_status(self, status: int) -> None:
        with self._counts_lock:
            self._responses[status] = self._responses.get(status, 0) + 1

    def _take_slot(self) -> bool:
        """An OCR slot: at once, or after waiting up to busy_timeout_s if fewer than ocr_waiting
        requests wait already (each waiter holds a server thread: /healthz must keep one)."""
        if self._slots.acquire(blocking=False):
            return True
        with self._counts_lock:
            if self._waiting >= self._max_waiting:
                return False
            self._waiting += 1
        try:
            return self._slots.acquire(timeout=self._busy_timeout_s)
        finally:
            with self._counts_lock:
                self._waiting -= 1

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


def _load_page() -> tuple[str, str]:
    """The try-it page and a Content-Security-Policy allowing exactly its inline script and style."""
    html = resources.files("edge_ocr.api").joinpath("page.html").read_text(encoding="utf-8")

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
