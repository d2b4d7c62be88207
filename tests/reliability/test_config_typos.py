"""Config typos, as `edge-ocr check` and `edge-ocr run` meet them: exit 2 with one line that
names the key and what was expected, before anything starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

TYPOS = [
    ('[mqtt]\nhots = "x"\n', "mqtt.hots: unknown key (did you mean 'host'?)"),
    ("[mqtt]\nport = 70000\n", "mqtt.port: expected 1..65535, got 70000"),
    ('[engine]\nprecision = "fp16"\n', "engine.precision: expected one of auto | fp32 | int8, got 'fp16'"),
    ("[engine]\nthreads = 0\n", 'engine.threads: expected "auto" or an integer from 1 to 256, got 0'),
    ("[guard]\nrss_soft_mb = 650\n", "guard.rss_hard_mb: expected more than rss_soft_mb (650), got 600"),
    ('[http]\nbind = "0.0.0.0:8080"\n', "http.bind: 0.0.0.0 is reachable from other machines"),
    ('[[sources]]\nname = "a b"\npath = "in"\n', "sources[0].name: expected ASCII letters (a-z, A-Z), digits"),
    ('[[sources]]\nname = "cam"\ntype = "camera"\nrois = [ { name = "r", box = [0, 0, 0, 5] } ]\n',
     "sources[0].rois[0].box: expected [x, y, width, height]"),
    ("[pipeline]\nqueue_size = 8\n[pipeline]\n", "invalid TOML"),
    ('[mqtt]\npassword = "hunter2"\n', "mqtt.password: secrets are not read from the config"),
]


@pytest.mark.parametrize("command", ["check", "run"])
def test_each_config_typo_exits_2_naming_the_key(tmp_path, report, command):
    named = 0
    for i, (text, message) in enumerate(TYPOS):
        config = tmp_path / ("typo-%d.toml" % i)
        config.write_text(text)
        run = subprocess.run([sys.executable, "-m", "edge_ocr", command, "-c", str(config)], capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 2, (text, run.stdout, run.stderr)
        assert message in run.stderr, (text, run.stderr)
        assert "hunter2" not in run.stderr + run.stdout and "Traceback" not in run.stderr
        named += 1
    report("config typos (`edge-ocr %s`)" % command, runs=1, inputs=len(TYPOS), lost=0, duplicated=0,
           errors="%d/%d exit 2 naming the key" % (named, len(TYPOS)))
