"""The daemon's HTTP API end to end: `edge-ocr run` in a subprocess, real HTTP over loopback."""

from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.request

import pytest

from tests.broker import wait_until
from tests.helpers import Daemon, drop, line_samples, promtool_check

SECRET = "s3cret-do-not-show"


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_daemon_serves_health_ocr_latest_config_and_metrics(eval_dev, tmp_path):
    (word, label), = line_samples(eval_dev, "IIIT5K-test", 1)
    (tmp_path / "secret").write_text(SECRET + "\n")
    config = tmp_path / "edge-ocr.toml"
    # A broker that is not there: the daemon must serve anyway, spooling for MQTT.
    config.write_text(
        '[engine]\nthreads = 2\n\n[http]\nbind = "127.0.0.1:0"\n\n[[sources]]\nname = "inbox"\ntype = "folder"\n'
        'path = "inbox"\ndone_dir = "done"\nfailed_dir = "failed"\nstability_delay = 0.1\n\n'
        '[mqtt]\nhost = "127.0.0.1"\nport = %d\nusername = "edge"\npassword_file = "secret"\nspool_dir = "spool"\n'
        % _unused_port()
    )
    daemon = Daemon(config).start()
    match = re.search(r"http listening url=(http://127\.0\.0\.1:\d+)", daemon.text())
    assert match, daemon.text()
    base = match.group(1)

    assert _get(base + "/healthz")[0] == 200
    status, body = _get(base + "/readyz")
    ready = json.loads(body)
    assert status == 200 and ready["model"]["loaded"] and ready["sources"] == {"inbox": "online"}
    assert ready["mqtt"] == "spooling" and ready["guard"]["level"] == "ok"

    request = urllib.request.Request(base + "/api/ocr", data=word.read_bytes(), headers={"Content-Type": "image/png"})
    with urllib.request.urlopen(request, timeout=60) as response:
        result = json.loads(response.read())
    assert result["source"] == "http" and result["status"] == "ok"
    assert result["text"].casefold() == label.casefold()
    with urllib.request.urlopen(request, timeout=60) as response:  # the same image again: from the cache
        again = json.loads(response.read())
    assert again["text"] == result["text"] and again["id"] != result["id"]
    metrics = _get(base + "/metrics")[1]
    assert b"edge_ocr_http_cache_hits_total 1" in metrics
    # read over HTTP, counted as a folder file's reading is: once (the cache hit runs no engine)
    assert b"edge_ocr_results_ok_total 2" in metrics and b"edge_ocr_lines_total 1" in metrics
    assert b'edge_ocr_stage_seconds_count{stage="recognize"} 1' in metrics
    bad = urllib.request.Request(base + "/api/ocr", data=b"\x89PNG\r\n\x1a\nbroken", headers={"Content-Type": "image/png"})
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(bad, timeout=60)
    assert b'edge_ocr_errors_total{code="unsupported_image"} 1' in _get(base + "/metrics")[1]
    # ... and in the JSON a Node-RED flow reads, which had only the total
    assert json.loads(_get(base + "/api/stats")[1])["errors_by_code"] == {"unsupported_image": 1}

    drop(word, tmp_path / "inbox", "word.png")
    assert wait_until(lambda: _get(base + "/api/latest/inbox")[0] == 200, 60)
    latest = json.loads(_get(base + "/api/latest/inbox")[1])
    assert latest["file"] == "word.png" and latest["text"].casefold() == label.casefold()
    assert _get(base + "/api/latest/nope")[0] == 404

    status, body = _get(base + "/api/config")
    assert status == 200 and SECRET.encode() not in body
    assert json.loads(body)["mqtt"]["username"] == "edge"

    status, body = _get(base + "/metrics")
    assert status == 200 and b"edge_ocr_" in body and b"guard" in body
    assert b'edge_ocr_stage_seconds_bucket{stage="recognize"' in body and b"edge_ocr_lines_total" in body
    promtool_check(body)  # the daemon's whole /metrics: stats, guard and HTTP counters
    assert SECRET not in daemon.text()
    assert daemon.terminate() == 0
