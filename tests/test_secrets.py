"""No secret leaves the daemon: the MQTT password and the HTTP token, planted in their files,
appear in no log line, HTTP answer, error, MQTT message, result file or `check` output; and
under the unit's umask nothing the daemon writes is open to other users."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from tests.broker import PASSWORD, Collector, wait_until
from tests.helpers import PREFIX, Daemon, drop, line_samples, write_config

TOKEN = "planted-http-token-4c1d"


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": "Bearer " + token} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.mark.broker
def test_the_password_and_the_token_show_up_nowhere(eval_dev, tmp_path, mosquitto):
    (word, _), = line_samples(eval_dev, "IIIT5K-test", 1)
    config = write_config(tmp_path, mosquitto)
    (tmp_path / "token").write_text(TOKEN + "\n")
    config.write_text(config.read_text().replace('[http]\nbind = "127.0.0.1:0"\n',
                                                 '[http]\nbind = "127.0.0.1:0"\ntoken_file = "token"\n'))
    everything = Collector(mosquitto, ["#"])
    daemon = Daemon(config, umask=0o027).start()  # the unit's UMask=
    base = next(w for w in daemon.text().split() if w.startswith("url=http://")).split("=", 1)[1]
    drop(word, tmp_path / "inbox", "word.png")
    assert wait_until(lambda: (tmp_path / "done" / "word.png").exists())
    everything.wait_topic(PREFIX + "/inbox/state")

    answers = [_get(base + path, TOKEN) for path in ("/healthz", "/readyz", "/metrics", "/api/stats", "/api/config",
                                                       "/api/latest", "/nope")]
    answers.append(_get(base + "/api/config", "a-wrong-token"))  # the 401's error text
    answers.append(_get(base + "/api/config"))
    assert [status for status, _ in answers[-2:]] == [401, 401]
    assert json.loads(answers[4][1])["http"]["token"] == "***"
    check = subprocess.run([sys.executable, "-m", "edge_ocr", "check", "-c", str(config)], capture_output=True,
                           text=True, timeout=120)
    assert daemon.terminate() == 0

    places = {
        "daemon log": daemon.text(),
        "HTTP answers": b"\n".join(body for _, body in answers).decode("utf-8", "replace"),
        "MQTT messages": "\n".join("%s %s" % (m.topic, m.payload.decode("utf-8", "replace")) for m in everything.messages),
        "check output": check.stdout + check.stderr,
        "result files": "\n".join(p.read_text(errors="replace") for p in (tmp_path / "done").glob("*.json")),
    }
    assert all(places.values()), [name for name, text in places.items() if not text]
    for secret in (PASSWORD, TOKEN):
        assert [name for name, text in places.items() if secret in text] == [], secret

    # Under the unit's UMask=0027, nothing the daemon made is readable or writable by others.
    made = [p for p in [tmp_path / "done", tmp_path / "failed", tmp_path / "spool", *(tmp_path / "done").glob("*.json"),
                        *(tmp_path / "spool").glob("*")] if p.exists()]
    assert any(p.suffix == ".json" for p in made)
    assert [p.name for p in made if p.stat().st_mode & 0o007] == []
