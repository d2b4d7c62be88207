"""edge_ocr.api: every endpoint with auth on and off, each bad input, the OCR slots, and
the waitress server on a real loopback port, on eval-dev images. Routing, auth and errors run
over FakeOcr (the real decoder, no models); three tests read through the real engine. What a
user relies on in real reading (text, boxes, regions, cache, refusals of real bad images,
counters, the OCR slots) is shown against the daemon itself in test_http_real.py."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from edge_ocr.api import ERROR_STATUS, HttpServer, make_app
from edge_ocr.config import Secret
from edge_ocr.engine.preprocess import decode_image
from edge_ocr.engine.types import EngineOutput, Region, TextLine
from edge_ocr.errors import ConfigError, EdgeOcrError, ImageError, SinkError, UnsupportedImage
from edge_ocr.readiness import Readiness, daemon_readiness
from edge_ocr.results import Result, Status, status_for
from tests.broker import wait_until
from tests.helpers import png_bomb

TOKEN = "s3cret-token-for-tests"
PAGE_IMAGE = "ic15_050210840803.jpg"  # an ICDAR-2015 scene photo: STARBUCKS COFFEE, fast to read
TIMEOUT_S = 60.0


class _Gated:
    """An OCR callable a test can hold inside a call: ``entered`` is set when a call starts, and
    while ``gate`` is set to an unset Event, calls wait on it (to keep an OCR slot busy)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.gate: threading.Event | None = None

    def _enter(self) -> None:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(TIMEOUT_S)


class FakeOcr(_Gated):
    """Routing, auth and error tests need an OCR that answers, not one that reads: this one
    decodes with the engine's real decoder (so bad images fail exactly as in the daemon) and
    "reads" the image size, one line per region or one for the whole image."""

    model = ("fake", "1")

    def __call__(self, image: bytes, *, det: bool, rois: tuple[Region, ...]) -> Result:
        self._enter()
        return Result("http", Status.OK, self.read(image, det, rois), self.model)

    @staticmethod
    def read(image: bytes, det: bool = True, rois: tuple[Region, ...] = ()) -> EngineOutput:
        height, width = decode_image(image, 50.0).shape[:2]
        corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
        if rois:
            lines = tuple(TextLine("%s %dx%d" % (r.name, r.box[2], r.box[3]), 0.99, corners, roi=r.name) for r in rois)
        else:
            lines = (TextLine("%s %dx%d" % ("page" if det else "line", width, height), 0.99, corners),)
        return EngineOutput(lines, (width, height), {"total": 1.0})


class EngineOcr(_Gated):
    """The app's OCR callable, built from the real engine (test code: the app owns the real one);
    a few tests keep it, to show real reading through every layer of the API."""

    def __init__(self, engine) -> None:
        super().__init__()
        self.engine = engine
        self.model = (engine.pack.name, engine.pack.version)

    def __call__(self, image: bytes, *, det: bool, rois: tuple[Region, ...]) -> Result:
        self._enter()
        start = time.perf_counter()
        output = self.engine(image, rois=list(rois) or None, det=det)
        timing = {"total": round((time.perf_counter() - start) * 1000.0, 2)}
        return Result("http", status_for(output, 0.6), output, self.model, timing_ms=timing)


@dataclass
class Backend:
    """Stands in for the daemon's side of the seam (edge_ocr.api.ApiBackend)."""

    ocr: FakeOcr | EngineOcr
    results: dict[str, Result] = field(default_factory=dict)
    captures: list[str | None] = field(default_factory=list)
    capture_ok: bool = True
    is_ready: bool = True
    is_accepting: bool = True

    def readiness(self) -> Readiness:
        """The daemon's own readiness rule, over parts this backend pretends to have."""
        return daemon_readiness(
            model=("ppocrv6-small", "1"),
            model_loaded=True,
            pipeline_running=True,
            sources={"inbox": "online" if self.is_ready else "offline"},
            mqtt="connected",
            guard={"level": "ok"},
        )

    def capture(self, source: str | None) -> tuple[bool, str]:
        self.captures.append(source)
        return self.capture_ok, "rescan requested" if self.capture_ok else "camera offline"

    def latest(self, source: str | None) -> Result | None:
        if source is None:
            return max(self.results.values(), key=lambda r: r.ts, default=None)
        return self.results.get(source)

    def source_names(self) -> tuple[str, ...]:
        return ("inbox", "meter")

    def stats_view(self) -> dict[str, float]:
        return {"jobs_total": 3, "queue_depth": 0}

    def metrics_text(self) -> str:
        return "# TYPE edge_ocr_jobs_total counter\nedge_ocr_jobs_total 3"

    def config_view(self) -> dict[str, Any]:
        return {"http": {"bind": "127.0.0.1:8080", "token_file": "***"}, "path": Path("/etc/x")}

    def accepting(self) -> bool:
        return self.is_accepting

    def app(self, **settings):
        return make_app(self, **settings)


@pytest.fixture(scope="module")
def engine(engines):
    return engines()


@pytest.fixture
def backend() -> Backend:
    return Backend(FakeOcr())


@pytest.fixture
def real_backend(engine) -> Backend:
    return Backend(EngineOcr(engine))


def client_for(app, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": "Bearer %s" % token} if token else {}
    return httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://127.0.0.1:8080",
                        headers=headers, timeout=TIMEOUT_S)


@pytest.fixture
def client(backend) -> Iterator[httpx.Client]:
    with client_for(backend.app()) as c:
        yield c


@pytest.fixture(scope="module")
def photo(eval_dev) -> bytes:
    return (eval_dev / "pages" / PAGE_IMAGE).read_bytes()


@pytest.fixture(scope="module")
def photo_text(photo) -> str:
    """What the fake OCR answers for the photo."""
    return FakeOcr.read(photo).text


@pytest.fixture(scope="module")
def real_text(engine, photo) -> str:
    return engine(photo).text


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert ERROR_STATUS[code] == status
    return body


def assert_serving(client: httpx.Client, photo: bytes, text: str) -> None:
    """A good upload still works: the bad request before did not hurt the server."""
    response = client.post("/api/ocr", files={"image": ("photo.jpg", photo, "image/jpeg")})
    assert response.status_code == 200, response.text
    assert response.json()["text"] == text


# -- read-only endpoints ---------------------------------------------------------------------------------


def test_healthz_is_liveness_json(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["cache-control"] == "no-store"


def test_readyz_is_200_when_ready_and_503_with_an_error_when_not(backend, client):
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "model": {"name": "ppocrv6-small", "version": "1", "loaded": True},
        "sources": {"inbox": "online"},
        "mqtt": "connected",
        "guard": {"level": "ok"},
    }
    backend.is_ready = False
    body = assert_error(client.get("/readyz"), 503, "not_ready")
    assert body["ready"] is False and body["sources"] == {"inbox": "offline"}
    assert body["error"]["message"] == "not ready: source inbox offline"


def test_metrics_is_prometheus_text_with_the_http_counters(client):
    client.get("/healthz")
    client.get("/no/such/thing")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = response.text
    assert "edge_ocr_jobs_total 3\n" in text
    assert 'edge_ocr_http_responses_total{code="200"} 1' in text
    assert 'edge_ocr_http_responses_total{code="404"} 1' in text
    assert "edge_ocr_http_ocr_busy_total 0" in text
    for line in text.splitlines():  # every sample line is "name[{labels}] value"
        if line and not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


def test_stats_and_config_are_the_injected_json(client):
    assert client.get("/api/stats").json() == {"jobs_total": 3, "queue_depth": 0}
    config = client.get("/api/config").json()
    assert config == {"http": {"bind": "127.0.0.1:8080", "token_file": "***"}, "path": "/etc/x"}


def test_latest_per_source_and_overall(backend, client, photo):
    assert_error(client.get("/api/latest"), 404, "no_result")
    assert_error(client.get("/api/latest/inbox"), 404, "no_result")
    assert_error(client.get("/api/latest/garage"), 404, "unknown_source")
    result = backend.ocr(photo, det=True, rois=())
    backend.results["inbox"] = result
    for path in ("/api/latest", "/api/latest/inbox"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.json() == json.loads(result.to_json())
    assert_error(client.get("/api/latest/meter"), 404, "no_result")


def test_capture_all_one_unknown_and_failing(backend, client):
    response = client.post("/api/capture")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "source": None, "message": "rescan requested"}
    assert client.post("/api/capture/meter").json()["source"] == "meter"
    assert_error(client.post("/api/capture/garage"), 404, "unknown_source")
    assert backend.captures == [None, "meter"]
    backend.capture_ok = False
    body = assert_error(client.post("/api/capture/meter"), 503, "capture_failed")
    assert body["error"]["message"] == "camera offline"


def test_bottle_errors_are_json(client):
    assert_error(client.get("/nope"), 404, "not_found")
    response = client.get("/api/ocr")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"
    assert_error(client.delete("/api/stats"), 405, "method_not_allowed")


def test_page_is_self_contained_html_with_a_strict_csp(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    html = response.text
    assert 'id="file"' in html and "api/ocr" in html and "sessionStorage" in html
    for external in ("http://", "https://", "//cdn", "<link", "src="):
        assert external not in html
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'sha256-" in csp and "'unsafe-inline'" not in csp
    assert "frame-ancestors 'none'" in csp


# -- POST /api/ocr ---------------------------------------------------------------------------------------


def test_ocr_multipart_upload_returns_the_result_json(real_backend, photo, real_text):
    photo_text = real_text  # the real engine: the API carries a real reading through unchanged
    with client_for(real_backend.app()) as client:
        response = client.post("/api/ocr", files={"image": ("photo.jpg", photo, "image/jpeg")})
    assert response.status_code == 200
    body = response.json()
    assert body["text"] == photo_text and "STARBUCKS" in photo_text
    assert body["status"] in ("ok", "low_confidence") and body["error"] is None
    assert body["source"] == "http" and body["model"]["name"]
    assert len(body["lines"]) == len(photo_text.splitlines())
    for line in body["lines"]:
        assert len(line["box"]) == 4 and 0 <= line["score"] <= 1
    assert body["timing_ms"]["total"] > 0 and "detect" in body["timing_ms"]


def test_ocr_raw_image_body(client, photo, photo_text):
    response = client.post("/api/ocr", content=photo, headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 200
    assert response.json()["text"] == photo_text
    octet = client.post("/api/ocr", content=photo, headers={"Content-Type": "application/octet-stream"})
    assert octet.json()["text"] == photo_text


def test_ocr_json_base64_with_det_and_rois(real_backend, engine, photo, real_text):
    client, photo_text = client_for(real_backend.app()), real_text  # the real engine reads the regions
    encoded = base64.b64encode(photo).decode()
    assert client.post("/api/ocr", json={"image": encoded}).json()["text"] == photo_text
    as_data_url = client.post("/api/ocr", json={"image": "data:image/jpeg;base64," + encoded})
    assert as_data_url.json()["text"] == photo_text

    whole = client.post("/api/ocr", json={"image": encoded, "det": False}).json()
    assert len(whole["lines"]) == 1  # det off: the whole image read as one line
    assert whole["text"] == engine(photo, det=False).text

    rois = [{"name": "sign", "box": [660, 75, 210, 30], "allowed_chars": "ABCDEFGHIJKLMNOPQRSTUVWXYZ "}]
    body = client.post("/api/ocr", json={"image": encoded, "rois": rois}).json()
    expected = engine(photo, rois=[Region("sign", (660, 75, 210, 30), "ABCDEFGHIJKLMNOPQRSTUVWXYZ ")])
    assert body["regions"]["sign"]["text"] == expected.text
    assert "STARBUCKS" in body["regions"]["sign"]["text"]
    assert body["lines"][0]["roi"] == "sign"

    outside = client.post("/api/ocr", json={"image": encoded, "rois": [{"name": "far", "box": [5000, 0, 10, 10]}]})
    assert outside.status_code == 422, outside.text
    assert outside.json()["error"]["code"] == "invalid_rois"
    assert "'far' box [5000, 0, 10, 10] lies outside the" in outside.json()["error"]["message"]


def test_ocr_options_in_query_and_form_fields(client, photo):
    one_line = FakeOcr.read(photo, det=False).text
    files = {"image": ("photo.jpg", photo, "image/jpeg")}
    assert client.post("/api/ocr?det=0", files=files).json()["text"] == one_line
    assert client.post("/api/ocr", files=files, data={"det": "false"}).json()["text"] == one_line
    rois = json.dumps([{"name": "sign", "box": [660, 75, 210, 30]}])
    by_form = client.post("/api/ocr", files=files, data={"rois": rois}).json()
    assert list(by_form["regions"]) == ["sign"]
    by_query = client.post("/api/ocr", params={"rois": rois}, content=photo, headers={"Content-Type": "image/jpeg"})
    assert list(by_query.json()["regions"]) == ["sign"]


def test_ocr_chunked_upload_through_bottle_parsing(client, photo, photo_text):
    boundary = "edge-ocr-boundary"
    body = (
        b"--%s\r\nContent-Disposition: form-data; name=\"det\"\r\n\r\n1\r\n"
        b"--%s\r\nContent-Disposition: form-data; name=\"image\"; filename=\"p.jpg\"\r\n"
        b"Content-Type: image/jpeg\r\n\r\n" % (boundary.encode(), boundary.encode())
    ) + photo + b"\r\n--%s--\r\n" % boundary.encode()
    response = client.post("/api/ocr", content=body,
                           headers={"Content-Type": "multipart/form-data; boundary=%s" % boundary})
    assert response.status_code == 200
    assert response.json()["text"] == photo_text


BROKEN_MULTIPART = b"--xyz\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n\r\nabc"


@pytest.mark.parametrize(
    ("name", "request_kwargs", "status", "code"),
    [
        ("broken multipart", {"content": BROKEN_MULTIPART,
                              "headers": {"Content-Type": "multipart/form-data; boundary=xyz"}}, 400, "bad_multipart"),
        ("multipart without boundary", {"content": b"x", "headers": {"Content-Type": "multipart/form-data"}},
         400, "bad_multipart"),
        ("binary field without filename", {"content": b"--b\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n"
                                                      b"\xff\xd8\xff\xe0\x00\r\n--b--\r\n",
                                           "headers": {"Content-Type": "multipart/form-data; boundary=b"}},
         400, "bad_multipart"),
        ("multipart without image", {"files": {"picture": ("a.jpg", b"123", "image/jpeg")}}, 400, "missing_image"),
        ("empty raw body", {"content": b"", "headers": {"Content-Type": "image/png"}}, 400, "missing_image"),
        ("bad JSON", {"content": b'{"image": ', "headers": {"Content-Type": "application/json"}}, 400, "bad_json"),
        ("JSON not an object", {"json": ["image"]}, 400, "bad_json"),
        ("JSON nested too deep", {"content": b'{"image": "QQ==", "rois": ' + b"[" * 100000 + b"]" * 100000 + b"}",
                                  "headers": {"Content-Type": "application/json"}}, 400, "bad_json"),
        ("JSON without image", {"json": {"det": True}}, 400, "missing_image"),
        ("bad base64", {"json": {"image": "not*base64!"}}, 400, "bad_base64"),
        ("base64 not a string", {"json": {"image": 12}}, 400, "bad_base64"),
        ("text/plain body", {"content": b"hello", "headers": {"Content-Type": "text/plain"}},
         415, "unsupported_media_type"),
        ("form-urlencoded", {"data": {"image": "abc"}}, 415, "unsupported_media_type"),
        ("no content type", {"content": b"\xff\xd8\xff"}, 415, "unsupported_media_type"),
        ("a text file as an image", {"files": {"image": ("notes.png", b"just some text\n" * 50, "image/png")}},
         415, "unsupported_image"),
        ("truncated JPEG", {"content": b"\xff\xd8\xff\xe0" + b"\x00" * 40, "headers": {"Content-Type": "image/jpeg"}},
         415, "unsupported_image"),
        ("bad det", {"files": {"image": ("a.jpg", b"1", "image/jpeg")}, "data": {"det": "maybe"}},
         422, "invalid_option"),
        ("unknown JSON key", {"json": {"image": "QQ==", "lang": "en"}}, 422, "invalid_option"),
        ("rois not JSON", {"content": b"1", "params": {"rois": "[{"}, "headers": {"Content-Type": "image/png"}},
         422, "invalid_rois"),
        ("rois nested too deep", {"content": b"1", "params": {"rois": "[" * 5000 + "]" * 5000},
                                  "headers": {"Content-Type": "image/png"}}, 422, "invalid_rois"),
        ("rois not a list", {"json": {"image": "QQ==", "rois": {"name": "a"}}}, 422, "invalid_rois"),
        ("roi without box", {"json": {"image": "QQ==", "rois": [{"name": "a"}]}}, 422, "invalid_rois"),
        ("roi with a negative box", {"json": {"image": "QQ==", "rois": [{"name": "a", "box": [-1, 0, 5, 5]}]}},
         422, "invalid_rois"),
        ("roi with a bad name", {"json": {"image": "QQ==", "rois": [{"name": "a b", "box": [0, 0, 5, 5]}]}},
         422, "invalid_rois"),
        ("duplicate roi names", {"json": {"image": "QQ==", "rois": [{"name": "a", "box": [0, 0, 5, 5]},
                                                                    {"name": "a", "box": [0, 0, 5, 5]}]}},
         422, "invalid_rois"),
        ("roi with an unknown key", {"json": {"image": "QQ==", "rois": [{"name": "a", "box": [0, 0, 5, 5],
                                                                         "pattern": "x"}]}}, 422, "invalid_rois"),
    ],
    ids=lambda v: v if isinstance(v, str) and " " in v else None,
)
def test_bad_input_gets_its_status_and_the_server_keeps_serving(client, photo, photo_text, name, request_kwargs,
                                                                status, code):
    assert_error(client.post("/api/ocr", **request_kwargs), status, code)
    assert_serving(client, photo, photo_text)


def test_a_100_megapixel_image_is_refused_without_decoding(client, photo, photo_text):
    bomb = png_bomb(10_000, 10_000)
    assert len(bomb) < 1_000_000
    body = assert_error(client.post("/api/ocr", files={"image": ("bomb.png", bomb, "image/png")}), 422,
                        "image_too_large")
    assert "100.0 MP" in body["error"]["message"]
    assert_serving(client, photo, photo_text)


def test_a_body_over_the_cap_is_refused_before_reading(backend, photo, photo_text):
    with client_for(backend.app(max_upload_mb=0.5)) as client:
        big = photo * (600_000 // len(photo) + 1)
        body = assert_error(client.post("/api/ocr", content=big, headers={"Content-Type": "image/jpeg"}), 413,
                            "upload_too_large")
        assert "0.5 MB" in body["error"]["message"]
        assert_error(client.post("/api/ocr", files={"image": ("a.jpg", big, "image/jpeg")}), 413, "upload_too_large")
        assert not backend.ocr.entered.is_set()
        assert_serving(client, photo, photo_text)


def test_an_error_result_maps_to_its_status(backend, photo, photo_text):
    outcomes: list[EdgeOcrError] = [UnsupportedImage("not a picture"), ImageError("odd image"),
                                    EdgeOcrError("engine exploded")]
    real = backend.ocr

    def ocr(image: bytes, *, det: bool, rois: tuple[Region, ...]) -> Result:
        if outcomes:
            return Result("http", Status.ERROR, None, ("pack", "1"), error=outcomes.pop(0))
        return real(image, det=det, rois=rois)

    backend.ocr = ocr  # type: ignore[assignment]
    with client_for(backend.app()) as client:
        files = {"image": ("photo.jpg", photo, "image/jpeg")}
        for status, code in ((415, "unsupported_image"), (422, "image"), (500, "error")):
            response = client.post("/api/ocr", files=files)
            assert response.status_code == status
            assert response.json()["status"] == "error" and response.json()["error"]["code"] == code
        assert_serving(client, photo, photo_text)


def test_a_crash_in_the_ocr_callable_is_a_logged_500(backend, photo, photo_text, caplog):
    calls = []
    real = backend.ocr

    def ocr(image: bytes, *, det: bool, rois: tuple[Region, ...]) -> Result:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("bug")
        return real(image, det=det, rois=rois)

    backend.ocr = ocr  # type: ignore[assignment]
    with client_for(backend.app()) as client, caplog.at_level(logging.ERROR, logger="edge_ocr.api"):
        assert_error(client.post("/api/ocr", content=photo, headers={"Content-Type": "image/jpeg"}), 500, "internal")
        assert any("http handler failed" in r.getMessage() and r.exc_info for r in caplog.records)
        assert_serving(client, photo, photo_text)


def test_ocr_is_refused_while_not_accepting_work(backend, client, photo, photo_text):
    backend.is_accepting = False
    response = client.post("/api/ocr", content=photo, headers={"Content-Type": "image/jpeg"})
    assert_error(response, 503, "not_ready")
    assert response.headers["retry-after"] == "5"
    assert client.get("/healthz").status_code == 200
    backend.is_accepting = True
    assert_serving(client, photo, photo_text)


def test_a_full_ocr_slot_answers_busy_then_frees(backend, photo, photo_text):
    backend.ocr.gate = threading.Event()
    app = backend.app(ocr_slots=1, busy_timeout_s=0.05)
    with client_for(app) as first, client_for(app) as second, ThreadPoolExecutor(1) as pool:
        held = pool.submit(first.post, "/api/ocr", content=photo, headers={"Content-Type": "image/jpeg"})
        assert backend.ocr.entered.wait(TIMEOUT_S)
        response = second.post("/api/ocr", content=photo, headers={"Content-Type": "image/jpeg"})
        assert_error(response, 503, "busy")
        assert response.headers["retry-after"] == "1"
        backend.ocr.gate.set()
        assert held.result(TIMEOUT_S).status_code == 200
        assert "edge_ocr_http_ocr_busy_total 1" in second.get("/metrics").text
        assert_serving(second, photo, photo_text)


def test_an_ocr_timeout_is_busy(backend, photo):
    def ocr(image: bytes, *, det: bool, rois: tuple[Region, ...]) -> Result:
        raise TimeoutError("queue full")

    backend.ocr = ocr  # type: ignore[assignment]
    with client_for(backend.app()) as client:
        assert_error(client.post("/api/ocr", content=photo, headers={"Content-Type": "image/jpeg"}), 503, "busy")


# -- auth -------------------------------------------------------------------------------------------------

PROTECTED = [
    ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/api/stats"), ("GET", "/api/config"),
    ("GET", "/api/latest"), ("GET", "/api/latest/inbox"), ("POST", "/api/capture"), ("POST", "/api/capture/inbox"),
    ("POST", "/api/ocr"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_with_a_token_every_endpoint_needs_it(backend, photo, method, path):
    app = backend.app(token=Secret(TOKEN))
    kwargs = {"content": photo, "headers": {"Content-Type": "image/jpeg"}} if path == "/api/ocr" else {}
    with client_for(app) as anonymous:
        missing = anonymous.request(method, path, **kwargs)
        assert_error(missing, 401, "unauthorized")
        assert missing.headers["www-authenticate"] == 'Bearer realm="edge-ocr"'
        wrong = anonymous.request(method, path, headers={"Authorization": "Bearer nope"})
        assert_error(wrong, 401, "unauthorized")
        basic = anonymous.request(method, path, headers={"Authorization": "Basic %s" % TOKEN})
        assert_error(basic, 401, "unauthorized")
    with client_for(app, TOKEN) as authorised:
        response = authorised.request(method, path, **kwargs)
        assert response.status_code in (200, 404), response.text  # 404 = no result yet, past the check
        if response.status_code == 404:
            assert response.json()["error"]["code"] == "no_result"
    assert backend.captures == ([None] if path == "/api/capture" else ["inbox"] if path.startswith("/api/cap") else [])


def test_with_a_token_healthz_and_the_page_stay_open(backend, photo, photo_text):
    app = backend.app(token=TOKEN)
    with client_for(app) as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        assert anonymous.get("/").status_code == 200
        assert_error(anonymous.get("/nope"), 404, "not_found")
    with client_for(app, TOKEN) as authorised:
        assert_serving(authorised, photo, photo_text)


def test_without_a_token_foreign_hosts_and_cross_site_posts_are_refused(client, photo, photo_text):
    assert_error(client.get("/api/stats", headers={"Host": "attacker.example:8080"}), 403, "forbidden_host")
    cross = client.post("/api/capture", headers={"Origin": "http://attacker.example"})
    assert_error(cross, 403, "forbidden_origin")
    # a sandboxed frame or a data: page sends Origin: null; a browser marks other sites' requests
    for headers in ({"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}):
        assert_error(client.post("/api/capture", headers=headers), 403, "forbidden_origin")
    assert client.post("/api/capture", headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200
    for host in ("localhost:8080", "127.0.0.1", "[::1]:8080"):
        assert client.get("/api/stats", headers={"Host": host}).status_code == 200
    same = client.post("/api/ocr", content=photo,
                       headers={"Content-Type": "image/jpeg", "Origin": "http://127.0.0.1:8080"})
    assert same.status_code == 200 and same.json()["text"] == photo_text


def test_logs_never_carry_the_token_or_the_payload(backend, photo, caplog):
    marker = "PAYLOAD-MARKER-1234"
    with client_for(backend.app(token=TOKEN), TOKEN) as client, caplog.at_level(logging.DEBUG):
        client.post("/api/ocr", json={"image": base64.b64encode(photo).decode(), "rois": marker})
        client.post("/api/ocr", content=photo, headers={"Content-Type": "image/jpeg", "X-Note": marker})
        client.get("/api/stats", headers={"Authorization": "Bearer wrong-%s" % marker})
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert any(r.name.startswith("edge_ocr.api.") for r in caplog.records)
    assert TOKEN not in text and marker not in text and "Authorization" not in text


def test_make_app_refuses_unusable_arguments(backend):
    # not user keys (config.py refuses those, naming them): programming errors at the seam
    with pytest.raises(ValueError, match="max_upload_mb"):
        backend.app(max_upload_mb=0)
    with pytest.raises(ValueError, match="token"):
        backend.app(token="  ")
    with pytest.raises(ValueError, match="ocr_slots"):
        backend.app(ocr_slots=0)


# -- the server on a real port --------------------------------------------------------------------------


@pytest.fixture
def serve():
    servers: list[HttpServer] = []

    def start(app, bind: str = "127.0.0.1:0", threads: int = 4) -> HttpServer:
        server = HttpServer(app, bind, threads)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        assert server.stop(timeout_s=5)


def test_server_binds_port_zero_serves_and_stops(backend, serve, photo, photo_text):
    server = serve(backend.app())
    assert server.port > 0 and server.url == "http://127.0.0.1:%d" % server.port
    assert any(t.name == "http" for t in threading.enumerate())
    with httpx.Client(base_url=server.url, timeout=TIMEOUT_S) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/").headers["server"] == "edge-ocr"
        assert_serving(client, photo, photo_text)
        assert_error(client.get("/nope"), 404, "not_found")
    assert server.stop(timeout_s=5)
    assert not any(t.name == "http" for t in threading.enumerate())
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/healthz", timeout=5)


def test_a_name_with_two_addresses_is_served_on_both(backend, serve, photo, photo_text, monkeypatch):
    """``bind = "localhost:8080"`` on Raspberry Pi OS and Debian: /etc/hosts gives ::1 and
    127.0.0.1, ::1 first. Listening on the first address alone left Home Assistant, asking
    127.0.0.1, refused. This machine's localhost is IPv4 only, so its resolver's answer there is
    given here; the sockets and the HTTP are real, on one port."""
    import edge_ocr.api.server as server_module

    debian_localhost = [(socket.AF_INET6, ("::1", 0, 0, 0)), (socket.AF_INET, ("127.0.0.1", 0))]
    monkeypatch.setattr(server_module, "resolve", lambda host, port: debian_localhost)
    server = serve(backend.app(), "localhost:0")
    for url in ("http://[::1]:%d" % server.port, "http://127.0.0.1:%d" % server.port):
        with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
            assert client.get("/healthz").json() == {"status": "ok"}
            assert_serving(client, photo, photo_text)
    assert server.stop(timeout_s=5)
    for url in ("http://[::1]:%d" % server.port, "http://127.0.0.1:%d" % server.port):
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/healthz", timeout=5)


def test_a_stop_after_its_wake_up_pipe_was_closed_elsewhere_still_stops(backend, photo, photo_text, caplog):
    """stop() hands the closing to the loop through waitress's wake-up pipe. Were that pipe's fd
    closed under it (a descriptor closed twice by other code), stop() used to raise EBADF and the
    daemon exited 1 after a clean run; now it closes the sockets itself and the port is freed."""
    server = HttpServer(backend.app(), "127.0.0.1:0", 4)
    server.start()
    with httpx.Client(base_url=server.url, timeout=TIMEOUT_S) as client:
        assert_serving(client, photo, photo_text)
    trigger = next(d.trigger for d in server._map.values() if hasattr(d, "task_dispatcher"))
    os.close(trigger.trigger)  # the write end, as a stray close elsewhere would
    with caplog.at_level("WARNING"):
        assert server.stop(timeout_s=5)
    assert "http wake-up pipe closed early" in caplog.text
    assert not any(t.name == "http" for t in threading.enumerate())
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/healthz", timeout=5)


def test_idle_connections_are_closed_after_the_wall_clock_steps_back(backend, monkeypatch):
    """waitress timed idle connections by the wall clock: after NTP stepped it back a day, it closed
    none for a day, and clients that connect and say nothing filled connection_limit (no /healthz)."""
    server = HttpServer(backend.app(), "127.0.0.1:0", 1, connection_limit=4, channel_timeout_s=1,
                        cleanup_interval_s=1)
    server.start()
    try:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT_S) for _ in range(4)]
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() - 86400)  # NTP steps the clock a day back

        def closed(connection: socket.socket) -> bool:
            connection.settimeout(0.05)
            try:
                return connection.recv(1) == b""
            except TimeoutError:
                return False
            except OSError:
                return True

        assert wait_until(lambda: all(closed(c) for c in idle), 15)
        assert httpx.get(server.url + "/healthz", timeout=TIMEOUT_S).json() == {"status": "ok"}
    finally:
        for connection in idle:
            connection.close()
        assert server.stop(timeout_s=5)


def test_clients_that_trickle_their_headers_are_closed_within_the_timeout_of_their_first_byte(backend):
    """Slowloris: a header byte every so often reset waitress's idle clock, so a few such clients held
    every connection for as long as they trickled, and nobody else got in (no token needed for that)."""
    server = HttpServer(backend.app(), "127.0.0.1:0", 1, connection_limit=4, channel_timeout_s=2,
                        cleanup_interval_s=1)
    server.start()
    trickling = [socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT_S) for _ in range(4)]
    try:
        for connection in trickling:
            connection.sendall(b"GET /healthz HTTP/1.1\r\n")
        sent_until = time.monotonic() + 8.0
        while time.monotonic() < sent_until:
            alive = []
            for connection in trickling:
                try:
                    connection.sendall(b"X")  # one more header byte, never the end of the headers
                    alive.append(connection)
                except OSError:
                    pass
            if not alive:
                break
            time.sleep(0.4)
        assert not alive  # each closed within ~2 s (+ the 1 s sweep) of its first byte, though never idle
        assert httpx.get(server.url + "/healthz", timeout=TIMEOUT_S).json() == {"status": "ok"}
    finally:
        for connection in trickling:
            connection.close()
        assert server.stop(timeout_s=5)


def test_a_stop_with_a_request_still_in_the_engine_says_it_did_not_stop(backend, photo, photo_text):
    """What App.shutdown reads to leave at once (App.leave_now) instead of unwinding that request's
    thread inside the engine (a request that finishes in time: every other test's teardown)."""
    server = HttpServer(backend.app(), "127.0.0.1:0", 4)
    server.start()
    backend.ocr.gate = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(httpx.post, server.url + "/api/ocr", content=photo,
                             headers={"Content-Type": "image/jpeg"}, timeout=TIMEOUT_S)
        assert backend.ocr.entered.wait(TIMEOUT_S)
        assert server.stop(timeout_s=0.5) is False  # the request is still in the engine
        backend.ocr.gate.set()
        with pytest.raises(httpx.HTTPError):  # its connection was closed by the stop
            answer.result(TIMEOUT_S).raise_for_status()


def test_concurrent_uploads_share_the_engine_in_bounded_slots(real_backend, serve, eval_dev):
    """6 uploads at once, 4 server threads, 2 OCR slots, the real engine: each is 200 with its own
    image's reading or 503 busy, never a 500 or another image's text."""
    photos = sorted((eval_dev / "pages").glob("ic15_*.jpg"))[:6]
    assert isinstance(real_backend.ocr, EngineOcr)
    expected = {p.name: real_backend.ocr.engine(p.read_bytes()).text for p in photos}
    server = serve(real_backend.app(ocr_slots=2, busy_timeout_s=0.5), threads=4)

    def upload(path: Path) -> tuple[str, httpx.Response]:
        with httpx.Client(base_url=server.url, timeout=TIMEOUT_S) as client:
            return path.name, client.post("/api/ocr", files={"image": (path.name, path.read_bytes(), "image/jpeg")})

    with ThreadPoolExecutor(len(photos)) as pool:
        answers = list(pool.map(upload, photos))
    statuses = sorted(r.status_code for _, r in answers)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 2
    for name, response in answers:
        if response.status_code == 200:
            assert response.json()["text"] == expected[name]
        else:
            assert_error(response, 503, "busy")
    with httpx.Client(base_url=server.url, timeout=TIMEOUT_S) as client:
        assert client.get("/healthz").status_code == 200
        assert "edge_ocr_http_ocr_busy_total %d" % statuses.count(503) in client.get("/metrics").text


def test_requests_waiting_for_a_server_thread_do_not_flood_the_journal(backend, serve, photo, caplog):
    """waitress logs "Task queue depth is N" at WARNING for each request that waits for a thread:
    about every other request of a burst, in the journal."""
    server = serve(backend.app(), threads=1)
    backend.ocr.gate = threading.Event()
    queued = next(d.task_dispatcher for d in server._map.values() if hasattr(d, "task_dispatcher"))
    with caplog.at_level(logging.WARNING), ThreadPoolExecutor(3) as pool:
        answers = [pool.submit(httpx.post, server.url + "/api/ocr", content=photo,
                               headers={"Content-Type": "image/jpeg"}, timeout=TIMEOUT_S) for _ in range(3)]
        assert backend.ocr.entered.wait(TIMEOUT_S)
        assert wait_until(lambda: len(queued.queue) == 2)  # the other two wait for the one thread
        backend.ocr.gate.set()
        assert [a.result(TIMEOUT_S).status_code for a in answers] == [200, 200, 200]
    assert "Task queue depth" not in caplog.text


def test_over_the_cap_on_the_wire_is_json_413_from_us_or_from_waitress(backend, serve, photo, photo_text):
    server = serve(backend.app(max_upload_mb=0.5))
    with httpx.Client(base_url=server.url, timeout=TIMEOUT_S) as client:
        # a little over our cap: our 413, body read by waitress but never by the app
        slightly = b"\xff" * (600 * 1024)
        assert_error(client.post("/api/ocr", content=slightly, headers={"Content-Type": "image/jpeg"}), 413,
                     "upload_too_large")
        # far over: waitress refuses from the Content-Length alone (no body sent), still as JSON
        status, headers, body = raw_request(server.port, b"POST /api/ocr HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                            b"Content-Type: image/jpeg\r\nContent-Length: 100000000\r\n\r\n")
        assert status == 413 and headers["content-type"] == "application/json; charset=utf-8"
        # in the app's words, not waitress's ("exceeds max_body of ..." named its inner cap)
        assert json.loads(body)["error"] == {"code": "upload_too_large", "message": "upload over the 0.5 MB limit"}
        # chunked (no Content-Length): waitress de-chunks under its cap, then the app checks ours
        chunked = client.post("/api/ocr", content=iter([photo[:1000], photo[1000:]]),
                              headers={"Content-Type": "image/jpeg"})
        assert chunked.status_code == 200 and chunked.json()["text"] == photo_text
        assert_error(client.post("/api/ocr", content=iter([slightly]), headers={"Content-Type": "image/jpeg"}), 413,
                     "upload_too_large")
    with httpx.Client(base_url=server.url, timeout=TIMEOUT_S) as client:
        assert_serving(client, photo, photo_text)
        # waitress's refusal is counted with ours: three 413s in all
        assert 'edge_ocr_http_responses_total{code="413"} 3' in client.get("/metrics").text


def test_the_cap_is_on_the_image_so_base64_in_json_may_carry_one_just_under_it(backend, serve, photo, photo_text):
    """A 0.45 MB image is 0.6 MB of base64: under a 0.5 MB cap it is taken in JSON as in a raw body;
    one over the cap is refused by us, naming the cap (never waitress's own words)."""
    server = serve(backend.app(max_upload_mb=0.5))
    under = photo + b"\0" * (460_000 - len(photo))  # trailing bytes after the JPEG's end: still the photo
    over = photo + b"\0" * (540_000 - len(photo))
    with httpx.Client(base_url=server.url, timeout=TIMEOUT_S) as client:
        taken = client.post("/api/ocr", json={"image": base64.b64encode(under).decode()})
        assert taken.status_code == 200 and taken.json()["text"] == photo_text
        body = assert_error(client.post("/api/ocr", json={"image": base64.b64encode(over).decode()}), 413,
                            "upload_too_large")
        assert body["error"]["message"] == "image over the 0.5 MB limit"
        far = base64.b64encode(photo * (2_000_000 // len(photo))).decode()  # 2 MB: over even the JSON body's cap
        assert_error(client.post("/api/ocr", json={"image": far}), 413, "upload_too_large")


def test_a_client_that_sends_a_huge_body_before_reading_still_gets_the_json_413(backend, serve, photo, photo_text):
    """urllib, requests and Node-RED send the whole body (no Expect: 100-continue) and only then
    read: the 413 must reach them, not a connection reset."""
    server = serve(backend.app(max_upload_mb=0.5))
    request = urllib.request.Request(server.url + "/api/ocr", data=b"\xff" * (60 * 1024 * 1024),
                                     headers={"Content-Type": "image/jpeg"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=TIMEOUT_S)
    assert refused.value.code == 413
    assert json.loads(refused.value.read())["error"]["code"] == "upload_too_large"
    with httpx.Client(base_url=server.url, timeout=TIMEOUT_S) as client:
        assert_serving(client, photo, photo_text)


def raw_request(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the reply until the server closes: (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, body


def test_waitress_refusals_are_json(backend, serve, photo, photo_text):
    server = serve(backend.app())
    status, headers, body = raw_request(server.port, b"BREW /pot HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                                     b"Transfer-Encoding: gzip\r\n\r\n")
    assert status == 501 and headers["content-type"] == "application/json; charset=utf-8", body
    assert json.loads(body)["error"]["code"] == "bad_request"
    with httpx.Client(base_url=server.url, timeout=TIMEOUT_S) as client:
        assert_serving(client, photo, photo_text)


def test_token_over_the_wire(backend, serve, photo, photo_text):
    server = serve(backend.app(token=TOKEN))
    with httpx.Client(base_url=server.url, timeout=TIMEOUT_S) as client:
        assert client.get("/healthz").status_code == 200
        assert_error(client.get("/api/stats"), 401, "unauthorized")
        client.headers["Authorization"] = "Bearer %s" % TOKEN
        assert client.get("/api/stats").status_code == 200
        assert_serving(client, photo, photo_text)


@pytest.mark.parametrize("bind", ["0.0.0.0:0", "[::]:8080", "192.168.1.20:8080", "raspberrypi.local:8080"])
def test_binding_beyond_loopback_needs_a_token(backend, bind):
    with pytest.raises(ConfigError, match=r"http.bind: .* set http.token_file"):
        HttpServer(backend.app(), bind)
    HttpServer(backend.app(token=TOKEN), bind)  # accepted (not started)


@pytest.mark.parametrize("bind", ["127.0.0.1:0", "localhost:8080", "[::1]:8080", "127.0.0.2:80"])
def test_loopback_binds_need_no_token(backend, bind):
    HttpServer(backend.app(), bind)


@pytest.mark.parametrize("bind", ["8080", "127.0.0.1", ":8080", "127.0.0.1:http", "127.0.0.1:70000"])
def test_a_bad_bind_is_a_config_error(backend, bind):
    with pytest.raises(ConfigError, match=r"http.bind: expected HOST:PORT"):
        HttpServer(backend.app(), bind)


def test_a_token_server_binds_all_interfaces(backend, serve):
    server = serve(backend.app(token=TOKEN), bind="0.0.0.0:0")
    assert httpx.get("http://127.0.0.1:%d/healthz" % server.port, timeout=TIMEOUT_S).status_code == 200


def test_a_taken_port_is_a_sink_error(backend, serve):
    first = serve(backend.app())
    with pytest.raises(SinkError, match="cannot listen on 127.0.0.1:%d" % first.port):
        HttpServer(backend.app(), "127.0.0.1:%d" % first.port).start()


def test_the_readme_lists_every_error_code_under_its_status():
    """README's "Errors are ..." paragraph names each code of ERROR_STATUS after its status number."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index('Errors are `{"error": {"code", "message"}}`')
    paragraph = readme[start:readme.index("\n\n", start)]
    for code, status in ERROR_STATUS.items():
        at = paragraph.find("`%s`" % code)
        assert at >= 0, "%s missing from the README's HTTP errors" % code
        assert re.findall(r"\b([1-5]\d\d)\b", paragraph[:at])[-1] == str(status), code


def test_health_is_answered_while_every_ocr_slot_is_taken_and_others_wait(backend, serve, photo):
    """8 uploads at once on 4 server threads: 2 read, 1 waits, the rest get 503 busy at once, and
    /healthz and /metrics still answer while the readers are held (before, waiting uploads took
    every thread and /healthz waited for them: 2.7 s with the default 2 s wait, here up to 60 s)."""
    server = serve(backend.app(ocr_slots=2, busy_timeout_s=60), threads=4)
    backend.ocr.gate = threading.Event()

    def upload(_: int) -> httpx.Response:
        return httpx.post(server.url + "/api/ocr", content=photo, headers={"Content-Type": "image/jpeg"},
                          timeout=TIMEOUT_S)

    with ThreadPoolExecutor(8) as pool:
        answers = [pool.submit(upload, i) for i in range(8)]
        assert wait_until(lambda: sum(a.done() for a in answers) == 5)  # 2 reading, 1 waiting, 5 refused
        refused = [a.result() for a in answers if a.done()]
        assert all(r.status_code == 503 and r.json()["error"]["code"] == "busy" for r in refused)
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.get("/healthz").json() == {"status": "ok"}
            assert "edge_ocr_http_ocr_busy_total 5" in client.get("/metrics").text
        backend.ocr.gate.set()
        assert sorted(a.result(TIMEOUT_S).status_code for a in answers) == [200] * 3 + [503] * 5


def test_a_region_that_is_not_an_object_is_named_in_json_words(client):
    body = assert_error(client.post("/api/ocr", json={"image": "QQ==", "rois": ["meter"]}), 422, "invalid_rois")
    assert body["error"]["message"] == "rois[0]: expected an object {name, box, allowed_chars}, got str 'meter'"
