"""The HTTP API as a user meets it: the daemon itself (``App``, in process) with its real engine,
cache, counters and waitress server, over real HTTP on a loopback port, reading eval-dev images.

tests/api/test_http.py shows routing, auth and every refusal over FakeOcr (and keeps the fakes
for what the real engine cannot be made to do: crash, hang in a slot, return an error result).
Here the same promises are shown with real reading: the result JSON of SPEC with the text of a
labelled receipt line, page or plate and boxes where that text is, regions, det off, the cache,
the refusals of real bad images, /metrics and /readyz after real reads, and a burst of uploads
against the daemon's OCR slots. One daemon serves the whole module (its models load in ~1 s).
"""

from __future__ import annotations

import base64
import difflib
import io
import itertools
import json
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from edge_ocr.app import App
from edge_ocr.config import load_config
from tests.broker import wait_until
from tests.helpers import line_samples, png_bomb, promtool_check

TIMEOUT_S = 60.0
MAX_UPLOAD_MB = 2
RECEIPT = "sroie_062.jpg"  # a scanned receipt, 753x1305, 26 labelled lines: detected at 960 px, boxes mapped back
SPEC_KEYS = {"id", "source", "ts", "status", "text", "confidence", "changed", "previous_text", "lines", "regions",
             "timing_ms", "model", "error"}
SPEC_TIMING = {"capture", "preprocess", "detect", "recognize", "total"}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, eval_dev) -> Iterator[App]:
    """The daemon as `edge-ocr run` builds it (a drop folder, so the detector loads up front), its
    API on a free loopback port, a 2 MB upload cap, no broker, and a guard that tolerates this
    whole pytest process."""
    root = tmp_path_factory.mktemp("daemon")
    config = root / "edge-ocr.toml"
    config.write_text(
        '[engine]\nthreads = 2\n\n[http]\nbind = "127.0.0.1:0"\nmax_upload_mb = %d\n\n'
        '[[sources]]\nname = "inbox"\ntype = "folder"\npath = "inbox"\n\n[mqtt]\nenabled = false\n\n'
        "[guard]\nrss_soft_mb = 100000\nrss_hard_mb = 200000\n" % MAX_UPLOAD_MB
    )
    app = App(load_config(config))
    try:
        app.start()
        assert app.http is not None
        yield app
    finally:
        assert app.shutdown() == 0


@pytest.fixture
def client(daemon) -> Iterator[httpx.Client]:
    assert daemon.http is not None
    with httpx.Client(base_url=daemon.http.url, timeout=TIMEOUT_S) as c:
        yield c


@pytest.fixture(scope="module")
def receipt(eval_dev) -> tuple[bytes, dict[str, Any]]:
    """The receipt page's bytes and its label row."""
    rows = (json.loads(line) for line in (eval_dev / "pages" / "labels.jsonl").read_text().splitlines())
    label = next(r for r in rows if r["file"] == RECEIPT)
    return (eval_dev / "pages" / RECEIPT).read_bytes(), label


def squash(text: str) -> str:
    """NFKC, no white space, case-folded: the eval-dev README's comparison (SROIE labels are upper case)."""
    return "".join(unicodedata.normalize("NFKC", text).split()).casefold()


def similar(read: str, label: str, at_least: float = 0.85) -> bool:
    return difflib.SequenceMatcher(None, squash(read), squash(label)).ratio() >= at_least


def size_of(data: bytes) -> tuple[int, int]:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    height, width = image.shape[:2]
    return width, height


def rect(quad: Any) -> tuple[float, float, float, float]:
    points = np.asarray(quad, dtype=np.float64)
    return points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max()


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def metrics(client: httpx.Client) -> dict[str, float]:
    """GET /metrics as {sample with its labels: value}."""
    response = client.get("/metrics")
    assert response.status_code == 200
    samples = (line.rsplit(" ", 1) for line in response.text.splitlines() if line and not line.startswith("#"))
    return {name: float(value) for name, value in samples}


def post_raw(client: httpx.Client, data: bytes, kind: str = "image/png", **params: str) -> httpx.Response:
    return client.post("/api/ocr", content=data, headers={"Content-Type": kind}, params=params)


def assert_result(response: httpx.Response, daemon: App, width: int, height: int, read: bool = True
                  ) -> dict[str, Any]:
    """A 200 whose body is SPEC's result JSON for a real reading by the daemon's pack, every box
    inside the ``width`` x ``height`` image (``read``: by the engine now, not from memory); returns
    the body."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body = response.json()
    assert SPEC_KEYS <= set(body), SPEC_KEYS - set(body)
    assert body["source"] == "http" and body["error"] is None
    assert body["model"] == {"name": daemon.model[0], "version": daemon.model[1]} and daemon.model[0]
    assert re.fullmatch(r"[0-9a-f]{32}", body["id"])
    ts = datetime.fromisoformat(body["ts"].replace("Z", "+00:00"))
    assert ts.utcoffset() == timedelta(0) and abs(datetime.now(UTC) - ts) < timedelta(minutes=5)
    assert SPEC_TIMING <= set(body["timing_ms"]) and (body["timing_ms"]["total"] > 0 or not read)
    assert body["text"] == "\n".join(line["text"] for line in body["lines"] if line["text"])
    for line in body["lines"]:
        assert 0.0 <= line["score"] <= 1.0 and len(line["box"]) == 4
        for x, y in line["box"]:
            assert 0 <= x <= width and 0 <= y <= height, (line, width, height)
    return body


# -- reading -----------------------------------------------------------------------------------------------


def test_a_receipt_line_posted_raw_reads_as_its_label_with_its_box_across_the_image(daemon, client, eval_dev):
    """README's `curl --data-binary @receipt.jpg`: the result JSON of SPEC, the label's text, and
    one box spanning the line (in the crop's own pixels, not the recogniser's 48-px-high input)."""
    ids = set()
    for path, label in line_samples(eval_dev, "SROIE2019-task1", 4):
        data = path.read_bytes()
        width, height = size_of(data)
        body = assert_result(post_raw(client, data), daemon, width, height)
        assert body["status"] in ("ok", "low_confidence") and body["regions"] == {}
        assert similar(body["text"], label), (body["text"], label)
        left = min(rect(line["box"])[0] for line in body["lines"])
        right = max(rect(line["box"])[2] for line in body["lines"])
        assert right - left >= 0.8 * width, (body["lines"], width)
        ids.add(body["id"])
    assert len(ids) == 4


def test_a_receipt_page_in_a_form_finds_its_labelled_lines_where_they_are(daemon, client, receipt):
    """A multipart upload of a 753x1305 scan (detected at 960 px): nearly every labelled line is
    found with its text, under a box overlapping the labelled one (IoU >= 0.5), in reading order."""
    data, label = receipt
    width, height = label["orig_size"]
    response = client.post("/api/ocr", files={"image": (RECEIPT, data, "image/jpeg")})
    body = assert_result(response, daemon, width, height)
    assert body["status"] in ("ok", "low_confidence")
    boxes = [rect(line["box"]) for line in body["lines"]]
    found = same = 0
    for wanted in label["lines"]:
        target = rect(wanted["box"])
        best = max(range(len(boxes)), key=lambda i: iou(target, boxes[i]))
        if iou(target, boxes[best]) >= 0.5:
            found += 1
            same += similar(body["lines"][best]["text"], wanted["text"], 0.8)
    labelled = len(label["lines"])  # 26 found, 26 read alike, measured
    assert found >= 0.9 * labelled and same >= 0.85 * labelled, (found, same, labelled)
    for above, below in itertools.pairwise(boxes):  # top to bottom: no line starts above the one before it
        assert (below[1] + below[3]) / 2 >= above[1], (above, below)


def test_regions_read_the_labelled_line_inside_each_without_detection(daemon, client, receipt):
    """JSON with base64 and ``rois``: each region reads the labelled line it frames (``allowed_chars``
    applied), its box lies in the region, and a region running off the image is read up to its edge."""
    data, label = receipt
    width, height = label["orig_size"]
    rois = [
        {"name": "gst", "box": [161, 487, 389, 49]},  # GST ID. NO : 000181747712
        {"name": "date", "box": [537, 666, 125, 39], "allowed_chars": "0123456789-"},  # 19-03-18
        {"name": "price", "box": [516, 741, 400, 46]},  # RM11.40 S, the region 163 px past the right edge
    ]
    response = client.post("/api/ocr", json={"image": base64.b64encode(data).decode(), "rois": rois})
    body = assert_result(response, daemon, width, height)
    assert list(body["regions"]) == ["gst", "date", "price"]
    assert similar(body["regions"]["gst"]["text"], "GST ID. NO : 000181747712"), body["regions"]
    assert body["regions"]["date"]["text"] == "19-03-18", body["regions"]
    assert similar(body["regions"]["price"]["text"], "RM11.40 S", 0.8), body["regions"]
    assert all(r["status"] == "ok" and 0 < r["score"] <= 1 for r in body["regions"].values()), body["regions"]
    assert body["timing_ms"]["detect"] == 0  # regions are read without detection
    by_name = {roi["name"]: roi["box"] for roi in rois}
    assert {line["roi"] for line in body["lines"]} == set(by_name)
    for line in body["lines"]:
        x, y, w, h = by_name[line["roi"]]
        left, top, right, bottom = rect(line["box"])
        assert x <= left and y <= top and right <= min(x + w, width) and bottom <= y + h, line
    price = next(line for line in body["lines"] if line["roi"] == "price")
    assert rect(price["box"])[2] == width  # clipped at the image's edge, not the region's


def test_det_off_reads_a_chinese_line_whole_and_answers_in_utf8(daemon, client, eval_dev):
    """``"det": false`` in JSON: the whole crop is one line (its box the image's corners), read in
    Chinese, and the JSON carries the characters as UTF-8, not \\u escapes."""
    (path, label), = line_samples(eval_dev, "omnidocbench:book", 1, "zh/lines")
    data = path.read_bytes()
    width, height = size_of(data)
    response = client.post("/api/ocr", json={"image": base64.b64encode(data).decode(), "det": False})
    body = assert_result(response, daemon, width, height)
    assert len(body["lines"]) == 1
    assert body["lines"][0]["box"] == [[0, 0], [width, 0], [width, height], [0, height]]
    assert body["timing_ms"]["detect"] == 0
    assert similar(body["text"], label, 0.9), (body["text"], label)
    assert body["text"].encode("utf-8") in response.content


def test_the_readme_curl_commands_read_a_receipt_line_and_a_plate(daemon, eval_dev):
    """The README's two examples, with curl itself: a raw body, and a form upload with ``?det=0``."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    assert daemon.http is not None
    url = daemon.http.url + "/api/ocr"
    (line, line_label), = line_samples(eval_dev, "SROIE2019-task1", 1)
    (plate, plate_label), = line_samples(eval_dev, "LPRNet_Pytorch-test-plates", 1)

    def run(*args: str) -> dict[str, Any]:
        done = subprocess.run([curl, "-s", "-S", "--fail-with-body", *args], capture_output=True, timeout=TIMEOUT_S)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    raw = run("--data-binary", "@%s" % line, "-H", "Content-Type: image/png", url)
    assert similar(raw["text"], line_label), (raw["text"], line_label)
    form = run("-F", "image=@%s" % plate, url + "?det=0")
    width, height = size_of(plate.read_bytes())
    assert form["lines"][0]["box"] == [[0, 0], [width, 0], [width, height], [0, height]]
    assert similar(form["text"], plate_label), (form["text"], plate_label)


# -- refusals ----------------------------------------------------------------------------------------------


def test_bad_real_images_are_refused_naming_why_and_counted_and_the_daemon_reads_on(daemon, client, receipt,
                                                                                    eval_dev):
    from PIL import Image

    data, label = receipt
    width, height = label["orig_size"]
    (line, line_label), = line_samples(eval_dev, "SROIE2019-task1", 1)
    gif = io.BytesIO()
    with Image.open(line) as image:
        image.save(gif, "GIF")
    before = metrics(client)
    cases: list[tuple[httpx.Response, int, str, tuple[str, ...]]] = [
        (post_raw(client, data[: len(data) // 2], "image/jpeg"), 415, "unsupported_image",
         ("truncated jpeg", "%dx%d" % (width, height))),
        (post_raw(client, gif.getvalue(), "image/gif"), 415, "unsupported_image", ("GIF",)),
        (post_raw(client, data, "text/plain"), 415, "unsupported_media_type", ("text/plain",)),
        (post_raw(client, data + b"\0" * (MAX_UPLOAD_MB << 20), "image/jpeg"), 413, "upload_too_large",
         ("%d MB" % MAX_UPLOAD_MB,)),
        (post_raw(client, png_bomb(10_000, 10_000)), 422, "image_too_large", ("10000x10000", "100.0 MP")),
        (client.post("/api/ocr", json={"image": base64.b64encode(data).decode(),
                                       "rois": [{"name": "far", "box": [width, 0, 10, 10]}]}),
         422, "invalid_rois", ("'far'", "outside the %dx%d image" % (width, height))),
    ]
    for response, status, code, words in cases:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json; charset=utf-8"
        error = response.json()["error"]
        assert error["code"] == code, error
        assert all(word in error["message"] for word in words), (error, words)
    after = metrics(client)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    # each bad image counted by its code; none of them reached the recogniser
    assert delta('edge_ocr_errors_total{code="unsupported_image"}') == 2
    assert delta('edge_ocr_errors_total{code="image_too_large"}') == 1
    assert delta('edge_ocr_stage_seconds_count{stage="recognize"}') == 0
    assert delta('edge_ocr_http_responses_total{code="415"}') == 3
    assert delta('edge_ocr_http_responses_total{code="413"}') == 1
    assert delta('edge_ocr_http_responses_total{code="422"}') == 2
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert similar(post_raw(client, line.read_bytes()).json()["text"], line_label)


# -- cache, counters, readiness ----------------------------------------------------------------------------


def test_the_same_image_and_options_again_come_from_memory_other_options_are_read(daemon, client, eval_dev):
    """README: the same image with the same options again is answered from memory, however it is
    sent; another ``det`` or ``rois`` is read anew."""
    path, label = line_samples(eval_dev, "SROIE2019-task1", 6)[5]  # not read by another test here
    data = path.read_bytes()
    width, height = size_of(data)
    hits, reads = "edge_ocr_http_cache_hits_total", 'edge_ocr_stage_seconds_count{stage="recognize"}'

    def post(**kwargs: Any) -> tuple[dict[str, Any], float, float]:
        before = metrics(client)
        body = assert_result(client.post("/api/ocr", **kwargs), daemon, width, height, read=False)
        after = metrics(client)
        return body, after[hits] - before.get(hits, 0.0), after[reads] - before.get(reads, 0.0)

    first, hit, read = post(content=data, headers={"Content-Type": "image/png"})
    assert (hit, read) == (0, 1) and similar(first["text"], label)
    again, hit, read = post(files={"image": ("again.png", data, "image/png")})  # the same bytes, in a form
    assert (hit, read) == (1, 0)
    assert again["lines"] == first["lines"] and again["id"] != first["id"]
    whole, hit, read = post(content=data, headers={"Content-Type": "image/png"}, params={"det": "0"})
    assert (hit, read) == (0, 1)
    assert whole["lines"][0]["box"] == [[0, 0], [width, 0], [width, height], [0, height]]
    _, hit, read = post(json={"image": base64.b64encode(data).decode(), "det": False})
    assert (hit, read) == (1, 0)
    region, hit, read = post(json={"image": base64.b64encode(data).decode(),
                                   "rois": [{"name": "left", "box": [0, 0, width // 2, height]}]})
    assert (hit, read) == (0, 1) and list(region["regions"]) == ["left"]
    _, hit, read = post(json={"image": base64.b64encode(data).decode(),
                              "rois": [{"name": "left", "box": [0, 0, width // 2, height], "allowed_chars": "0123"}]})
    assert (hit, read) == (0, 1)



def test_an_answer_from_memory_does_not_claim_the_reading_time_of_the_first(daemon, client, eval_dev):
    """A cache hit runs no stage: its timing_ms must not report the detect and recognise times of
    the reading it repeats, as a reused drop-folder file does not (its stages are 0)."""
    path, _ = line_samples(eval_dev, "SROIE2019-task1", 7)[6]  # not read by another test here
    data = path.read_bytes()
    first = post_raw(client, data).json()
    again = post_raw(client, data).json()
    assert first["timing_ms"]["recognize"] > 0
    assert again["timing_ms"]["recognize"] == 0 and again["timing_ms"]["detect"] == 0
    assert again["timing_ms"]["total"] != first["timing_ms"]["total"]  # its own, not the first's


def test_metrics_readyz_and_stats_after_a_real_page_read(daemon, client, eval_dev):
    """A page read over HTTP is counted as a folder file's reading is: one result, its lines, one
    sample per stage; /readyz names the pack that read it; promtool accepts the whole /metrics."""
    data = (eval_dev / "pages" / "sroie_073.jpg").read_bytes()  # not read by another test here
    before = metrics(client)
    body = assert_result(post_raw(client, data, "image/jpeg"), daemon, *size_of(data))
    response = client.get("/metrics")
    after = metrics(client)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert len(body["lines"]) > 20  # a real page: its 48 labelled lines, give or take
    assert delta("edge_ocr_results_ok_total") == 1
    assert delta("edge_ocr_lines_total") == len(body["lines"])
    for stage in ("decode", "preprocess", "detect", "recognize", "total"):
        assert delta('edge_ocr_stage_seconds_count{stage="%s"}' % stage) == 1, stage
    assert after["edge_ocr_engine_last_seconds"] > 0
    assert delta('edge_ocr_http_responses_total{code="200"}') >= 2  # the upload and a /metrics
    promtool_check(response.content)
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True and ready.json()["sources"] == {"inbox": "online"}
    assert ready.json()["model"] == {**body["model"], "loaded": True}
    stats = client.get("/api/stats").json()
    assert stats["results_ok_total"] == after["edge_ocr_results_ok_total"]
    assert stats["lines_total"] == after["edge_ocr_lines_total"]


def test_a_burst_of_uploads_gets_each_its_own_reading_or_busy_and_health_answers(daemon, client, eval_dev):
    """6 photos at once against the daemon's 2 OCR slots (1 more may wait) on its 4 server threads:
    each answer is 200 with the reading of its own photo or 503 busy with Retry-After, never a 500
    or another photo's text; some are refused, and /healthz answers while the slots are taken."""
    assert daemon.http is not None and daemon.engine is not None
    photos = sorted((eval_dev / "pages").glob("ic15_*.jpg"))[:6]
    busy = "edge_ocr_http_ocr_busy_total"
    before = metrics(client)

    def upload(path: Path) -> httpx.Response:
        with httpx.Client(base_url=daemon.http.url, timeout=TIMEOUT_S) as own:
            return own.post("/api/ocr", files={"image": (path.name, path.read_bytes(), "image/jpeg")})

    with ThreadPoolExecutor(len(photos)) as pool:
        answers = [pool.submit(upload, path) for path in photos]
        assert wait_until(lambda: metrics(client)[busy] > before[busy] or all(a.done() for a in answers), 30)
        pending = sum(not a.done() for a in answers)
        health = client.get("/healthz", timeout=5)
        responses = [a.result(TIMEOUT_S) for a in answers]
    assert health.json() == {"status": "ok"} and pending >= 1
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, [r.text for r in responses]
    assert statuses.count(200) >= 2 and statuses.count(503) >= 1, statuses
    for path, response in zip(photos, responses):
        if response.status_code == 200:
            width, height = size_of(path.read_bytes())
            body = assert_result(response, daemon, width, height)
            assert body["text"] == daemon.engine(path.read_bytes()).text, path.name
        else:
            assert response.json()["error"]["code"] == "busy" and response.headers["retry-after"] == "1"
    assert metrics(client)[busy] - before[busy] == statuses.count(503)
