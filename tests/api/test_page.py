"""The try-it page (GET /) in a real headless Chromium, driven over the DevTools protocol: upload
an eval-dev image, wait for the result in the DOM, compare it with the engine, screenshot it.

Needs Debian's ``chromium`` and the ``websocket-client`` test dependency: skipped without them,
failed under CI=true.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_ocr.api import HttpServer, make_app
from edge_ocr.engine.types import Region
from edge_ocr.readiness import Readiness
from edge_ocr.results import Result, status_for

TOKEN = "page-test-token"
RECEIPT = "sroie_621.jpg"  # a scanned receipt: ~50 lines, a busy canvas
TIMEOUT_S = 60.0
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--remote-debugging-port=0", "--window-size=1280,1100",
)
# Resolves once the page settled ("done" or "error"); event-driven via MutationObserver, bounded.
WAIT_SETTLED = """
new Promise((resolve, reject) => {
  const settled = () => ["done", "error"].includes(document.body.dataset.state);
  if (settled()) return resolve(document.body.dataset.state);
  const timer = setTimeout(() => reject(new Error("page did not settle")), %d);
  new MutationObserver((_, observer) => {
    if (settled()) { clearTimeout(timer); observer.disconnect(); resolve(document.body.dataset.state); }
  }).observe(document.body, {attributes: true, attributeFilter: ["data-state"]});
})
""" % int(TIMEOUT_S * 1000)
READ_PAGE = """({
  state: document.body.dataset.state,
  status: document.getElementById("status").textContent,
  error: document.getElementById("error").hidden ? "" : document.getElementById("error").textContent,
  text: document.getElementById("text").textContent,
  lines: [...document.querySelectorAll("#lines li")].map(li => ({
    text: li.querySelector(".text").textContent, score: li.querySelector(".score").textContent})),
  timing: [...document.querySelectorAll("#timing dt")].map(dt => dt.textContent),
  canvas: [document.getElementById("canvas").width, document.getElementById("canvas").height],
  canvasShown: !document.getElementById("canvas").classList.contains("empty"),
  authOpen: document.getElementById("auth").open,
  stored: sessionStorage.getItem("edge-ocr-token"),
  token: document.getElementById("token").value,
})"""


def required(what: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("%s is required under CI (apt-get install -y chromium; pip install websocket-client)" % what)
    pytest.skip("%s not installed" % what)


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if path is None:
        required("chromium")
    return path


@pytest.fixture(scope="module")
def websocket_module():
    try:
        import websocket
    except ImportError:
        required("websocket-client")
    return websocket


class Cdp:
    """A minimal DevTools protocol client over one page's websocket."""

    def __init__(self, websocket_module, url: str) -> None:
        self.ws = websocket_module.create_connection(url, timeout=TIMEOUT_S, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise AssertionError("%s failed: %s" % (method, message["error"]))
                return message["result"]
            self.events.append(message)

    def wait_event(self, method: str) -> dict[str, Any]:
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        while True:  # ws.recv() is bounded by the connection timeout
            message = json.loads(self.ws.recv())
            if message.get("method") == method:
                return message
            self.events.append(message)

    def evaluate(self, expression: str, await_promise: bool = False) -> Any:
        reply = self.call("Runtime.evaluate", expression=expression, awaitPromise=await_promise, returnByValue=True)
        if "exceptionDetails" in reply:
            raise AssertionError("page script failed: %s" % reply["exceptionDetails"])
        return reply["result"].get("value")

    def upload(self, path: Path) -> dict[str, Any]:
        """Set the page's file input (fires its change event), wait until it settles, read it."""
        self.evaluate("document.body.dataset.state = 'idle'")
        root = self.call("DOM.getDocument")["root"]["nodeId"]
        node = self.call("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
        self.call("DOM.setFileInputFiles", files=[str(path)], nodeId=node)
        self.evaluate(WAIT_SETTLED, await_promise=True)
        return self.evaluate(READ_PAGE)

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def browser(chromium, websocket_module, tmp_path) -> Iterator[Any]:
    """Start headless Chromium; yields ``open(url) -> Cdp`` on its first page. Its profile lives
    under ``tmp_path``; its temporary files (the ``org.chromium.Chromium.*`` singleton socket
    directories, otherwise left in /tmp after each run) in a short-named directory under /tmp,
    removed afterwards: a socket path under ``tmp_path`` would pass the 108-byte limit of a Unix
    socket's name."""
    with tempfile.TemporaryDirectory(prefix="cr", dir="/tmp") as scratch:
        yield from _run_browser(chromium, websocket_module, tmp_path, scratch)


def _run_browser(chromium: str, websocket_module: Any, tmp_path: Path, scratch: str) -> Iterator[Any]:
    proc = subprocess.Popen(
        [chromium, *CHROMIUM_FLAGS, "--user-data-dir=%s" % (tmp_path / "profile"), "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TMPDIR": scratch},
    )
    endpoint: queue.Queue[str] = queue.Queue()

    def read_stderr() -> None:  # drains stderr for the life of the browser; reports the DevTools URL
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("DevTools listening on "):
                endpoint.put(line.split(" on ", 1)[1].strip())

    reader = threading.Thread(target=read_stderr, name="chromium-stderr", daemon=True)
    reader.start()
    clients: list[Cdp] = []
    try:
        try:
            browser_url = endpoint.get(timeout=TIMEOUT_S)
        except queue.Empty:
            pytest.fail("chromium did not start (exit code %s)" % proc.poll())
        port = int(browser_url.split(":")[2].split("/")[0])

        def open_page(url: str) -> Cdp:
            import httpx

            targets = httpx.get("http://127.0.0.1:%d/json/list" % port, timeout=TIMEOUT_S).json()
            page = next(t for t in targets if t["type"] == "page")
            cdp = Cdp(websocket_module, page["webSocketDebuggerUrl"])
            clients.append(cdp)
            for domain in ("Page", "Runtime", "Log"):
                cdp.call(domain + ".enable")
            cdp.call("Page.navigate", url=url)
            cdp.wait_event("Page.loadEventFired")
            return cdp

        yield open_page
    finally:
        for cdp in clients:
            cdp.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        reader.join(10)
        if proc.stderr is not None:
            proc.stderr.close()


class PageBackend:
    """The page needs only OCR from the daemon's side of the API (edge_ocr.api.ApiBackend)."""

    def __init__(self, ocr: Any) -> None:
        self.ocr = ocr

    def capture(self, source: str | None) -> tuple[bool, str]:
        return True, ""

    def latest(self, source: str | None) -> Result | None:
        return None

    def source_names(self) -> tuple[str, ...]:
        return ()

    def stats_view(self) -> dict[str, float]:
        return {}

    def metrics_text(self) -> str:
        return ""

    def readiness(self) -> Readiness:
        return Readiness()

    def config_view(self) -> dict[str, Any]:
        return {}

    def accepting(self) -> bool:
        return True


@pytest.fixture
def serve(engines):
    """An HttpServer on a free loopback port whose OCR is the real engine."""
    engine = engines()
    servers: list[HttpServer] = []

    def ocr(image: bytes, *, det: bool, rois: tuple[Region, ...]) -> Result:
        start = time.perf_counter()
        output = engine(image, rois=list(rois) or None, det=det)
        timing = {"total": round((time.perf_counter() - start) * 1000.0, 2)}
        return Result("http", status_for(output, 0.6), output, (engine.pack.name, engine.pack.version),
                      timing_ms=timing)

    def start(token: str | None = None) -> HttpServer:
        app = make_app(PageBackend(ocr), token=token)
        server = HttpServer(app, "127.0.0.1:0")
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(timeout_s=5)


def console_problems(cdp: Cdp) -> list[str]:
    """Script exceptions and console errors (a CSP refusal of our inline script shows up here)."""
    problems = [e["params"]["exceptionDetails"].get("text", "") for e in cdp.events
                if e.get("method") == "Runtime.exceptionThrown"]
    problems += [e["params"]["entry"]["text"] for e in cdp.events
                 if e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"]
    problems += [str(e["params"]["args"]) for e in cdp.events
                 if e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error"]
    return problems


def test_the_page_reads_an_uploaded_receipt_and_draws_its_boxes(browser, serve, engines, eval_dev, tmp_path):
    image = eval_dev / "pages" / RECEIPT
    expected = engines()(image.read_bytes())
    server = serve()
    cdp = browser(server.url + "/")
    shown = cdp.upload(image)
    screenshot = tmp_path / "page.png"
    cdp.screenshot(screenshot)
    print("screenshot: %s" % screenshot)

    assert shown["state"] == "done", shown
    assert shown["error"] == ""
    assert [line["text"] for line in shown["lines"]] == [line.text for line in expected.lines]
    assert len(shown["lines"]) > 20
    for line, want in zip(shown["lines"], expected.lines, strict=True):
        assert abs(float(line["score"]) - want.score) < 0.002
    assert shown["text"] == expected.text
    assert shown["status"].startswith("%d lines" % len(expected.lines))
    assert "total" in shown["timing"] and "detect" in shown["timing"]
    assert shown["canvasShown"] and shown["canvas"] == list(expected.image_size)
    assert screenshot.stat().st_size > 10_000
    assert console_problems(cdp) == []


def test_the_page_asks_for_the_token_and_keeps_it_in_session_storage(browser, serve, engines, eval_dev, tmp_path):
    image = eval_dev / "pages" / "ic15_050210840803.jpg"
    expected = engines()(image.read_bytes())
    server = serve(token=TOKEN)
    cdp = browser(server.url + "/")

    refused = cdp.upload(image)
    assert refused["state"] == "error"
    assert "needs an access token" in refused["error"] and refused["authOpen"]
    assert refused["lines"] == []

    cdp.evaluate("const t = document.getElementById('token'); t.value = %s; t.dispatchEvent(new Event('input'))"
                 % json.dumps(TOKEN))
    accepted = cdp.upload(image)
    cdp.screenshot(tmp_path / "page-token.png")
    print("screenshot: %s" % (tmp_path / "page-token.png"))
    assert accepted["state"] == "done" and accepted["error"] == ""
    assert [line["text"] for line in accepted["lines"]] == [line.text for line in expected.lines]
    assert accepted["stored"] == TOKEN

    cdp.call("Page.reload")
    cdp.wait_event("Page.loadEventFired")
    assert cdp.evaluate(READ_PAGE)["token"] == TOKEN  # survives a reload of the tab
    # only the 401 of the first upload may be in the console (the browser logs failed fetches)
    assert all("401" in p for p in console_problems(cdp)), console_problems(cdp)


def test_the_page_shows_a_server_error(browser, serve, tmp_path):
    server = serve()
    cdp = browser(server.url + "/")
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("this is not a picture\n" * 20)
    shown = cdp.upload(not_an_image)
    assert shown["state"] == "error"
    assert "unsupported_image" in shown["error"] and "HTTP 415" in shown["error"]
    assert shown["lines"] == [] and not shown["canvasShown"]


def test_an_earlier_reading_answered_late_is_dropped(browser, engines, eval_dev):
    """Unticking "find text lines" while a page is still being read starts a second reading; the
    first one's answer, arriving after it, used to be added to the list (both readings' lines
    shown). The server holds the first reading until the second has been shown."""
    engine = engines()
    image = eval_dev / "pages" / RECEIPT
    first_entered, release_first, first_done = threading.Event(), threading.Event(), threading.Event()
    calls: list[bool] = []

    def ocr(data: bytes, *, det: bool, rois: tuple[Region, ...]) -> Result:
        calls.append(det)
        if len(calls) == 1:
            first_entered.set()
            assert release_first.wait(TIMEOUT_S)
        output = engine(data, rois=list(rois) or None, det=det)
        if det:
            first_done.set()
        return Result("http", status_for(output, 0.6), output, (engine.pack.name, engine.pack.version))

    server = HttpServer(make_app(PageBackend(ocr)), "127.0.0.1:0")
    server.start()
    try:
        cdp = browser(server.url + "/")
        cdp.call("Network.enable")
        root = cdp.call("DOM.getDocument")["root"]["nodeId"]
        node = cdp.call("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
        cdp.call("DOM.setFileInputFiles", files=[str(image)], nodeId=node)
        assert first_entered.wait(TIMEOUT_S)
        cdp.evaluate("document.body.dataset.state = 'idle'; document.getElementById('det').click()")
        second = cdp.evaluate(WAIT_SETTLED, await_promise=True) and cdp.evaluate(READ_PAGE)
        release_first.set()
        assert first_done.wait(TIMEOUT_S)
        for _ in range(2):  # both answers have reached the page
            cdp.wait_event("Network.loadingFinished")
        cdp.evaluate("new Promise(resolve => setTimeout(resolve, 500))", await_promise=True)  # its handler ran
        shown = cdp.evaluate(READ_PAGE)
    finally:
        server.stop(timeout_s=5)
    assert calls == [True, False]
    assert second["state"] == "done" and len(second["lines"]) == 1  # the whole image as one line
    assert shown["lines"] == second["lines"] and shown["status"] == second["status"]
    assert cdp.evaluate("document.getElementById('det').checked") is False


def test_the_readme_screenshot_reads_a_synthetic_receipt(browser, serve, tmp_path):
    """The README's picture of the page, from this test: a synthetic receipt (no eval-dev data,
    whose licence keeps it out of the repo). With EDGE_OCR_DOCS set to a folder, the screenshot
    is saved there as try-it.png."""
    import cv2

    from edge_ocr.tools.tune import sample_images

    receipt = tmp_path / "receipt.png"
    cv2.imwrite(str(receipt), sample_images()[1])
    cdp = browser(serve().url + "/")
    shown = cdp.upload(receipt)
    assert shown["state"] == "done" and shown["error"] == "", shown
    assert any(line["text"].startswith("ITEM 03") for line in shown["lines"]), shown["lines"]
    screenshot = tmp_path / "try-it.png"
    cdp.screenshot(screenshot)
    assert screenshot.stat().st_size > 10_000
    docs = os.environ.get("EDGE_OCR_DOCS")
    if docs:
        shutil.copyfile(screenshot, Path(docs) / "try-it.png")
