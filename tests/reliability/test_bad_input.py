"""Bad input on every path a user has: the drop folder, HTTP and MQTT commands, one running
daemon for all of it. Each kind gets its documented outcome (done/, or failed/ with its error
code; an HTTP status and error code; a command acknowledgement), the daemon keeps serving, and
nothing else is lost: a good file dropped after all of it is still read."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.broker import Collector
from tests.helpers import PREFIX, Daemon, drop, line_samples, wait_until, write_config
from tests.reliability.bad_inputs import makers

TOKEN = "bad-input-token"
FLEET_JOBS = "bad/jobs"
FLEET_ANSWERS = "bad/jobs/results/bad-input"  # under <jobs_topic>/results (fleet.answers_topic)
PHOTO = "ic15_050210840803.jpg"

# folder kinds: the file name → "done" or the error code in failed/NAME.error.json
FOLDER_OUTCOMES = {
    "corrupt.png": "unsupported_image",
    "truncated.jpg": "unsupported_image",  # taken after incomplete_timeout, then refused
    "empty.png": "unsupported_image",
    "png-named.jpg": "done",  # the bytes decide, not the extension
    "notes.txt": "unsupported_image",
    "script.sh.jpg": "unsupported_image",
    "huge-100mp.png": "image_too_large",  # refused from its header, never decoded
    "bomb-400mp.png": "image_too_large",
    "multipage.tiff": "done",  # the first page is read
    "animated.gif": "unsupported_image",  # GIF is not a format we decode
    "animated.webp": "done",  # the first frame is read
    "cmyk.jpg": "done",
    "sixteen-bit.png": "done",
    "link.png": "source",  # symlinks are refused (SPEC), moved to failed/ with the reason
    "hardlink.png": "done",  # a second name of a regular file is a regular file
    "a b (1).png": "done",
    "-dash.png": "done",
    "ünïcødé 文件.png": "done",
    "new\nline.png": "done",
    "slow-writer.png": "done",  # taken once, after the writer finished
    "replaced.png": "done",  # replaced by another image while waiting: the final bytes are read
}
ODD_BYTES_NAME = b"odd-\xff\xfe.png"  # not UTF-8: still processed, the name kept byte for byte


def _request(url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
             method: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _code(answer: tuple[int, dict]) -> tuple[int, str]:
    status, body = answer
    return status, body.get("error", {}).get("code", "") if status >= 400 else "ok"


def _originals(directory: Path) -> list[bytes]:
    return sorted(os.fsencode(p.name) for p in directory.iterdir() if p.is_file() and p.suffix != ".json"
                  and not p.name.startswith("."))


@pytest.mark.broker
def test_bad_input_on_every_path_gets_its_documented_error_and_loses_nothing(eval_dev, tmp_path, mosquitto, report):
    photo = eval_dev / "pages" / PHOTO
    (tmp_path / "token").write_text(TOKEN + "\n")
    config = write_config(tmp_path, mosquitto, extra_source="incomplete_timeout = 2.0\n")
    config.write_text(config.read_text().replace('[http]\nbind = "127.0.0.1:0"\n',
                                                 '[http]\nbind = "127.0.0.1:0"\ntoken_file = "token"\n'
                                                 'max_upload_mb = 20.0\n')
                      + '\n[fleet]\nenabled = true\njobs_topic = "%s"\n' % FLEET_JOBS)
    sub = Collector(mosquitto, [PREFIX + "/cmd/result"])
    daemon = Daemon(config).start()
    base = re.search(r"http listening url=(http://127\.0\.0\.1:\d+)", daemon.text()).group(1)
    auth = {"Authorization": "Bearer " + TOKEN}
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    outside.mkdir()

    # -- the drop folder -------------------------------------------------------------------------
    for name, data in makers(photo).items():
        (outside / name).write_bytes(data)
        os.rename(outside / name, inbox / name)
    shutil.copy(photo, outside / "target.png")
    os.symlink(outside / "target.png", inbox / "link.png")
    os.link(outside / "target.png", inbox / "hardlink.png")
    for name in ("a b (1).png", "-dash.png", "ünïcødé 文件.png", "new\nline.png"):
        drop(photo, inbox, name)
    shutil.copy(photo, outside / "odd.png")
    os.rename(os.fsencode(outside / "odd.png"), os.fsencode(inbox) + b"/" + ODD_BYTES_NAME)

    def slow_writer() -> None:
        data = photo.read_bytes()
        with open(inbox / "slow-writer.png", "wb") as fh:  # no temp name: the daemon must wait
            for start in range(0, len(data), len(data) // 5):
                fh.write(data[start:start + len(data) // 5])
                fh.flush()
                time.sleep(0.4)

    writer = threading.Thread(target=slow_writer, name="test-slow-writer")
    writer.start()
    (inbox / "replaced.png").write_bytes(b"\x89PNG\r\n\x1a\n half")  # replaced before it is stable
    drop(photo, outside, "next.png")
    os.replace(outside / "next.png", inbox / "replaced.png")
    writer.join(30)

    expected = sorted([os.fsencode(n) for n in FOLDER_OUTCOMES] + [ODD_BYTES_NAME])

    def accounted() -> list[bytes]:
        return sorted(_originals(tmp_path / "done") + _originals(tmp_path / "failed"))

    assert wait_until(lambda: accounted() == expected, 180), (accounted(), expected)
    folder_ok = 0
    for name, outcome in FOLDER_OUTCOMES.items():
        stem = name.rsplit(".", 1)[0]
        if outcome == "done":
            result = json.loads((tmp_path / "done" / (stem + ".json")).read_text(encoding="utf-8"))
            assert result["file"] == name and result["status"] in ("ok", "low_confidence"), name
            assert "STARBUCKS" in result["text"] or name in ("cmyk.jpg",), (name, result["text"])
        else:
            error = json.loads((tmp_path / "failed" / (stem + ".error.json")).read_text(encoding="utf-8"))
            assert error["error"]["code"] == outcome, (name, error)
            assert error["error"]["message"]
        folder_ok += 1
    assert (outside / "target.png").exists()  # a refused symlink never touches its target
    assert (tmp_path / "done" / os.fsdecode(ODD_BYTES_NAME)).exists()

    # -- HTTP ---------------------------------------------------------------------------------------
    good = photo.read_bytes()
    corrupt = makers(photo)["corrupt.png"]
    boundary = "----edge"
    http_cases = {
        "no token": (_request(base + "/api/ocr", good, {"Content-Type": "image/jpeg"}), (401, "unauthorized")),
        "wrong token": (_request(base + "/api/ocr", good, {"Content-Type": "image/jpeg",
                                                             "Authorization": "Bearer nope"}), (401, "unauthorized")),
        "upload over the cap": (_request(base + "/api/ocr", b"\xff\xd8" + b"\0" * (30 << 20),
                                         {"Content-Type": "image/jpeg", **auth}), (413, "upload_too_large")),
        "broken multipart": (_request(base + "/api/ocr", b"--other\r\nnonsense",
                                      {"Content-Type": "multipart/form-data; boundary=%s" % boundary, **auth}),
                             (400, "bad_multipart")),
        "bad JSON": (_request(base + "/api/ocr", b'{"image": ', {"Content-Type": "application/json", **auth}),
                     (400, "bad_json")),
        "bad base64": (_request(base + "/api/ocr", b'{"image": "@@@not base64@@@"}',
                                {"Content-Type": "application/json", **auth}), (400, "bad_base64")),
        "bad rois": (_request(base + "/api/ocr?rois=%5B%7B%22name%22%3A1%7D%5D", good,
                              {"Content-Type": "image/jpeg", **auth}), (422, "invalid_rois")),
        "wrong media type": (_request(base + "/api/ocr", good, {"Content-Type": "text/plain", **auth}),
                             (415, "unsupported_media_type")),
        "corrupt image": (_request(base + "/api/ocr", corrupt, {"Content-Type": "image/png", **auth}),
                          (415, "unsupported_image")),
        "100 MP image": (_request(base + "/api/ocr", makers(photo)["huge-100mp.png"],
                                  {"Content-Type": "image/png", **auth}), (422, "image_too_large")),
        "JSON with base64 of a corrupt image": (_request(
            base + "/api/ocr", json.dumps({"image": base64.b64encode(corrupt).decode()}).encode(),
            {"Content-Type": "application/json", **auth}), (415, "unsupported_image")),
    }
    # slowloris: a client that sends its body a byte at a time holds one connection, not the server
    host, port = base[len("http://"):].split(":")
    slow = socket.create_connection((host, int(port)), timeout=10)
    slow.sendall(b"POST /api/ocr HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                 b"Authorization: Bearer %s\r\nContent-Length: 100000\r\n\r\n\xff" % TOKEN.encode())
    http_cases["slow body (slowloris) beside a normal request"] = (
        _request(base + "/api/ocr", good, {"Content-Type": "image/jpeg", **auth}), (200, "ok"))
    slow.close()
    http_ok = 0
    for kind, (answer, documented) in http_cases.items():
        assert _code(answer) == documented, (kind, answer)
        http_ok += 1

    # -- MQTT commands --------------------------------------------------------------------------------
    import paho.mqtt.publish as publish

    from tests.broker import PASSWORD, USER

    commands = {
        "binary payload": ("%s/cmd/capture" % PREFIX, bytes(range(256)), True),
        "1 MB payload": ("%s/cmd/capture" % PREFIX, b"x" * (1 << 20), True),
        "unknown source": ("%s/nosuch/capture" % PREFIX, b"", False),
        "JSON garbage": ("%s/inbox/capture" % PREFIX, b'{"source": [', True),
    }
    for topic, payload, _ in commands.values():
        publish.single(topic, payload, qos=1, hostname="127.0.0.1", port=mosquitto.port,
                       auth={"username": USER, "password": PASSWORD})
    acks = [json.loads(m.payload) for m in sub.wait_topic(PREFIX + "/cmd/result", len(commands), 60)]
    assert sorted(a["ok"] for a in acks) == sorted(ok for _, _, ok in commands.values())
    assert all(len(a["request"]) <= 200 for a in acks)
    unknown = next(a for a in acks if a["source"] == "nosuch")
    assert not unknown["ok"] and "unknown source" in unknown["message"]
    publish.single("%s/inbox/whatever" % PREFIX, b"\0" * 10, qos=1, hostname="127.0.0.1", port=mosquitto.port,
                   auth={"username": USER, "password": PASSWORD})  # not a command: ignored

    # -- fleet jobs -------------------------------------------------------------------------------------
    fleet_cases = {  # job_id → (payload, user properties, response topic?, documented error code or "ok")
        "no-response-topic": (good, [], False, None),  # nobody to answer: logged, counted, acknowledged
        "corrupt": (corrupt, [], True, "unsupported_image"),
        "empty": (b"", [], True, "unsupported_image"),
        "100mp": (makers(photo)["huge-100mp.png"], [], True, "image_too_large"),
        "over-20mb": (b"\0" * (21 * 1024 * 1024), [], True, "image_too_large"),  # fleet.max_job_mb: never read
        "bad-det": (good, [("det", "maybe")], True, "invalid_option"),
        "bad-rois": (good, [("rois", "[{")], True, "invalid_rois"),
        "rois-no-box": (good, [("rois", '[{"name": "a"}]')], True, "invalid_rois"),
        "good-after": (good, [], True, "ok"),
    }
    answers = _fleet(mosquitto.port, fleet_cases)
    for job_id, (_, _, respond, code) in fleet_cases.items():
        if not respond:
            assert job_id not in answers
            continue
        answer = answers[job_id]
        assert answer["worker"].endswith("-fleet") and answer["job_id"] == job_id
        got = "ok" if answer["error"] is None else answer["error"]["code"]
        assert got == code, (job_id, answer["error"])
    def fleet_counts() -> tuple[str, ...]:
        with urllib.request.urlopen(urllib.request.Request(base + "/metrics", headers=auth), timeout=30) as response:
            metrics = response.read().decode()
        return tuple(re.search(r"^edge_ocr_fleet_jobs_%s_total (\d+)" % name, metrics, re.M).group(1)
                     for name in ("failed", "done"))

    # A job counts once the broker has acknowledged its answer, which may come after we received it.
    assert wait_until(lambda: fleet_counts() == ("8", "1"), 30), fleet_counts()

    # -- still serving, nothing else lost ----------------------------------------------------------------
    (word, _), = line_samples(eval_dev, "IIIT5K-test", 1)
    drop(word, inbox, "after.png")
    assert wait_until(lambda: (tmp_path / "done" / "after.json").exists(), 60)
    assert _request(base + "/healthz")[0] == 200
    assert daemon.proc is not None and daemon.proc.poll() is None
    assert "Traceback" not in daemon.text()
    assert daemon.terminate() == 0
    sub.close()
    report("bad input: drop folder", runs=1, inputs=len(FOLDER_OUTCOMES) + 1, lost=0, duplicated=0,
           errors="%d/%d" % (folder_ok + 1, len(FOLDER_OUTCOMES) + 1))
    report("bad input: HTTP", runs=1, inputs=len(http_cases), lost=0, duplicated=0,
           errors="%d/%d" % (http_ok, len(http_cases)))
    report("bad input: MQTT commands", runs=1, inputs=len(commands) + 1, lost=0, duplicated=0,
           errors="%d/%d acknowledged as documented" % (len(acks), len(commands)))
    report("bad input: fleet jobs (no response topic, corrupt, empty, 100 MP, over 20 MB, bad det, bad rois)", runs=1,
           inputs=len(fleet_cases), lost=0, duplicated=0,
           errors="%d/%d answered as documented, 1 counted and dropped" % (len(answers), len(fleet_cases) - 1))


def _fleet(port: int, cases: dict) -> dict[str, dict]:
    """Publish each case as an MQTT 5 job and collect the answers by job_id."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from tests.broker import PASSWORD, USER

    answers: dict[str, dict] = {}
    done = threading.Condition()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bad-fleet-client", protocol=paho.MQTTv5)
    client.username_pw_set(USER, PASSWORD)

    def on_message(c, u, msg):
        with done:
            answer = json.loads(msg.payload)
            answers[answer["job_id"]] = answer
            done.notify_all()

    subscribed = threading.Event()
    client.on_message = on_message
    client.on_subscribe = lambda c, u, mid, reasons, props: subscribed.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.subscribe(FLEET_ANSWERS, qos=1)
    assert subscribed.wait(30)  # the SUBACK: answers from here on reach us
    for job_id, (payload, user, respond, _) in cases.items():
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("job_id", job_id), *user]
        if respond:
            props.ResponseTopic = FLEET_ANSWERS
        client.publish(FLEET_JOBS, payload, qos=1, properties=props).wait_for_publish(10)
    with done:
        done.wait_for(lambda: len(answers) >= sum(1 for c in cases.values() if c[2]), 60)
    client.disconnect()
    client.loop_stop()
    return answers
