"""Property-based fuzz (Hypothesis, a fixed number of derandomised examples, so CI is bounded
and repeatable): the image probe and decoder, and the HTTP request parsing. Whatever the bytes,
the answer is a documented one: an image or an ImageError; an HTTP status with a JSON error
from the documented table, never a 500 and never a crash of the server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_ocr.api import ERROR_STATUS, make_app
from edge_ocr.engine.preprocess import decode_image, probe_image
from edge_ocr.engine.types import EngineOutput, Region, TextLine
from edge_ocr.errors import ImageError
from edge_ocr.readiness import Readiness, daemon_readiness
from edge_ocr.results import Result, Status
from tests.helpers import EVAL_DEV

EXAMPLES = 300
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SEEDS = sorted((EVAL_DEV / "pages").glob("*.jpg"))[:2] + sorted((EVAL_DEV / "lines").glob("*.png"))[:2]


def _seed_images() -> list[bytes]:
    return [p.read_bytes() for p in SEEDS]


@st.composite
def damaged_images(draw: st.DrawFn) -> bytes:
    """A real image with bytes flipped, cut or spliced, or a made-up header of each format."""
    images = _seed_images()
    if not images:
        pytest.skip("eval-dev not found")
    data = bytearray(draw(st.sampled_from(images)))
    if draw(st.integers(0, 9)) < 4:  # 4 in 10 intact: the decoder and the OCR path get real work too
        return bytes(data)
    action = draw(st.sampled_from(["flip", "cut", "splice", "header"]))
    if action == "flip":
        for _ in range(draw(st.integers(1, 20))):
            pos = draw(st.integers(0, len(data) - 1))  # headers and scan data alike
            data[pos] = draw(st.integers(0, 255))
    elif action == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif action == "splice":
        pos = draw(st.integers(0, len(data)))
        data[pos:pos] = draw(st.binary(max_size=512))
    else:
        magic = draw(st.sampled_from([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*",
                                      b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"GIF89a"]))
        data = bytearray(magic + draw(st.binary(max_size=256)))
    return bytes(data)


@FUZZ
@given(st.one_of(st.binary(max_size=2048), damaged_images()))
def test_the_probe_and_the_decoder_give_an_image_or_an_image_error(data):
    try:
        fmt, width, height = probe_image(data)
        assert fmt in ("jpeg", "png", "bmp", "tiff", "webp") and width >= 0 and height >= 0
    except ImageError as exc:
        assert exc.code in ("unsupported_image", "image_too_large") and exc.message
    try:
        image = decode_image(data, max_megapixels=50.0)
    except ImageError as exc:
        assert exc.code in ("unsupported_image", "image_too_large")
        return
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


class _DecodingBackend:
    """The API's seam with OCR that only decodes (the real decoder, no models)."""

    def ocr(self, image: bytes, *, det: bool, rois: tuple[Region, ...]) -> Result:
        height, width = decode_image(image, 50.0).shape[:2]
        box = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
        lines = tuple(TextLine(r.name, 0.9, box, roi=r.name) for r in rois) or (TextLine("x", 0.9, box),)
        return Result("http", Status.OK, EngineOutput(lines, (width, height), {}), ("fuzz", "1"))

    def capture(self, source: str | None) -> tuple[bool, str]:
        return True, "ok"

    def latest(self, source: str | None) -> Result | None:
        return None

    def source_names(self) -> tuple[str, ...]:
        return ("inbox",)

    def stats_view(self) -> dict[str, float]:
        return {}

    def metrics_text(self) -> str:
        return ""

    def readiness(self) -> Readiness:
        return daemon_readiness(model=("fuzz", "1"), model_loaded=True, pipeline_running=True, sources={},
                                mqtt="disabled", guard={"level": "ok"})

    def config_view(self) -> dict[str, Any]:
        return {}

    def accepting(self) -> bool:
        return True


@pytest.fixture(scope="module")
def client():
    app = make_app(_DecodingBackend(), max_upload_mb=1.0)
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://127.0.0.1:8080") as c:
        yield c


CONTENT_TYPES = ["image/jpeg", "image/png", "application/octet-stream", "application/json", "text/plain", "",
                 "multipart/form-data; boundary=xyz", "multipart/form-data", "application/x-www-form-urlencoded",
                 "image/*", "application/ld+json; charset=utf-8"]
ROI_TEXT = st.one_of(st.none(), st.text(max_size=80), st.just('[{"name": "a", "box": [0, 0, 5, 5]}]'),
                     st.just('[{"name": "a", "box": [0, 0, -5, 5]}]'), st.just("[" * 50))


@st.composite
def requests_(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(CONTENT_TYPES[:3] * 3 + CONTENT_TYPES))  # mostly image uploads
    body_kind = draw(st.sampled_from(["bytes", "image", "image", "image", "json", "multipart"]))
    if body_kind == "bytes":
        body = draw(st.binary(max_size=2048))
    elif body_kind == "image":
        body = draw(damaged_images())
    elif body_kind == "json":
        value = draw(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                                  lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                                      st.sampled_from(["image", "det", "rois", "x"]), inner, max_size=4),
                                  max_leaves=10))
        body = json.dumps(value).encode()
    else:
        part = draw(st.binary(max_size=512))
        body = (b"--xyz\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"a.jpg\"\r\n\r\n"
                % draw(st.sampled_from([b"image", b"file", b"det"])) + part + draw(st.sampled_from(
                    [b"\r\n--xyz--\r\n", b"", b"\r\n--xy"])))
    det = st.one_of(st.none(), st.none(), st.sampled_from(["0", "1", "true", "no"]), st.text(max_size=8))
    params = {k: v for k, v in {"det": draw(det), "rois": draw(st.one_of(st.none(), st.none(), ROI_TEXT))}.items()
              if v is not None} if draw(st.booleans()) else {}
    return {"content": body, "headers": {"Content-Type": kind} if kind else {}, "params": params}


@FUZZ
@given(requests_())
def test_any_ocr_request_gets_a_documented_answer_never_a_500(client, answered, request_):
    response = client.post("/api/ocr", **request_)
    answered[response.status_code] = answered.get(response.status_code, 0) + 1
    assert response.status_code != 500, response.text
    body = response.json()
    if response.status_code == 200:
        assert body["status"] == "ok" and body["error"] is None
    else:
        assert ERROR_STATUS[body["error"]["code"]] == response.status_code and body["error"]["message"]


@pytest.fixture(scope="module")
def answered() -> Iterator[dict[int, int]]:
    """The fuzz's answers by status code, checked once it is over (in this fixture, so that any
    selection or order of the tests checks them): a fuzz that never got past the parser proves little."""
    counts: dict[int, int] = {}
    yield counts
    assert counts.get(200, 0) >= EXAMPLES // 20 and sum(v for k, v in counts.items() if k != 200) >= EXAMPLES // 4, \
        counts


def test_the_fuzz_starts_from_real_images():
    assert SEEDS and all(Path(p).is_file() for p in SEEDS)
