"""edge_ocr.cli: the commands as a user or script runs them, in a real subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.broker import wait_until
from tests.helpers import REPO, line_samples


def edge_ocr(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge_ocr", *args], capture_output=True, text=True, timeout=600, cwd=cwd
    )


def test_output_closed_early_or_on_a_full_disk_ends_without_a_traceback(eval_dev):
    words = [str(path) for path, _ in line_samples(eval_dev, "IIIT5K-test", 40)]
    reader = subprocess.Popen([sys.executable, "-m", "edge_ocr", "ocr", "--json", "--threads", "1", *words],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert reader.stdout is not None and reader.stderr is not None
    assert reader.stdout.read(10)  # `| head -c 10`: the first result has come, then the pipe is closed
    reader.stdout.close()
    assert reader.wait(600) == 141  # 128 + SIGPIPE, as a shell tool ends in a pipeline
    with reader.stderr:
        assert b"Traceback" not in reader.stderr.read()
    # A command whose output stays buffered until it ends (no PYTHONUNBUFFERED, as outside the unit)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    listing = subprocess.Popen([sys.executable, "-m", "edge_ocr", "models", "list"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env)
    assert listing.stdout is not None and listing.stderr is not None
    listing.stdout.close()  # `| true`: gone before it writes
    assert listing.wait(120) == 141
    with listing.stderr:
        assert listing.stderr.read() == b""
    with open("/dev/full", "w") as full:
        run = subprocess.run([sys.executable, "-m", "edge_ocr", "ocr", "--json", words[0]], stdout=full,
                             stderr=subprocess.PIPE, text=True, timeout=600)
    assert run.returncode == 1 and "No space left on device" in run.stderr and "Traceback" not in run.stderr


def test_ocr_json_lines_one_per_image_with_errors_kept(eval_dev, tmp_path):
    (word, _label), = line_samples(eval_dev, "IIIT5K-test", 1)
    page = next((eval_dev / "pages").glob("sroie_*.jpg"))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(page.read_bytes()[:5000])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")

    run = edge_ocr("ocr", "--json", "--threads", "1", str(word), str(page), str(broken), str(empty), str(tmp_path / "missing.png"))
    assert run.returncode == 1  # some files failed
    results = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["file"] for r in results] == [str(word), str(page), str(broken), str(empty), str(tmp_path / "missing.png")]
    assert results[0]["status"] == "ok" and results[1]["status"] in ("ok", "low_confidence")
    assert len(results[1]["lines"]) > 10 and all(len(line["box"]) == 4 for line in results[1]["lines"])
    assert results[1]["model"]["name"] == "ppocrv6-small"
    assert set(results[1]["timing_ms"]) >= {"detect", "recognize", "total"}
    assert [r["error"]["code"] for r in results[2:]] == ["unsupported_image", "unsupported_image", "error"]
    assert all(r["status"] == "error" and r["lines"] == [] and r["changed"] is False for r in results[2:])  # as the daemon says it
    assert "file=%s" % broken in run.stderr


def test_ocr_plain_text_without_detection(eval_dev):
    (word, label), = line_samples(eval_dev, "IIIT5K-test", 1)
    run = edge_ocr("ocr", "--no-det", str(word))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().casefold() == label.casefold()


def test_a_file_name_that_is_not_utf8_is_printed_escaped_under_a_strict_utf8_locale(eval_dev, tmp_path):
    """A Latin-1 name (an old camera's, an SMB share's) under Raspberry Pi OS's en_GB.UTF-8: the
    header of each file's text was a UnicodeEncodeError and a traceback."""
    (word, label), = line_samples(eval_dev, "IIIT5K-test", 1)
    latin1 = os.path.join(os.fsencode(tmp_path), b"caf\xe9.png")
    shutil.copy(word, latin1)
    run = subprocess.run([sys.executable, "-m", "edge_ocr", "ocr", "--no-det", latin1, str(word)],
                         capture_output=True, timeout=600, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    out = run.stdout.decode("utf-8")
    assert "==> %s <==" % os.path.join(str(tmp_path), "caf\\udce9.png") in out
    assert out.lower().count(label.lower()) == 2


def test_unknown_pack_is_a_usage_error_naming_the_choices(eval_dev):
    (word, _), = line_samples(eval_dev, "IIIT5K-test", 1)
    run = edge_ocr("ocr", "--pack", "nope", str(word))
    assert run.returncode == 2  # as a typo in engine.pack: the daemon's unit must not restart on it
    assert "model pack 'nope' not found" in run.stderr and "ppocrv6-small" in run.stderr


def test_bad_usage_exits_2():
    assert edge_ocr("ocr").returncode == 2
    assert edge_ocr("ocr", "--threads", "many", "x.png").returncode == 2


@pytest.mark.parametrize("args, says", [
    (["bench", "--precisions", "int4"], "--precisions: unknown int4"),
    (["bench", "--memory-modes", "x"], "--memory-modes: unknown x"),
    (["bench", "--compare", "tesseract"], "--compare: unknown tesseract"),
    (["bench", "--threads", "100000"], "--threads: expected integers from 1 to 256"),
    (["bench", "--set", "{notimg}"], "not a supported image"),
    (["tune", "--runs", "0"], "--runs: expected an integer >= 1"),
    (["eval", "--limit", "-1", "x.tsv"], "--limit: expected an integer >= 1"),
    (["ocr", "--low-confidence", "nan", "x.png"], "--low-confidence: expected a finite number"),
    (["ocr", "--threads", "99999999999999999999", "x.png"], "--threads: expected \"auto\" or an integer from 1 to 256"),
    (["ocr", "--pack", "common", "{notimg}"], "--pack: pack common has no recogniser"),  # shared files, no reader
    (["submit", "--timeout", "0", "x.png"], "--timeout: expected seconds > 0"),
    (["submit", "--rois", "[{{", "{notimg}"], "--rois: not valid JSON"),  # before any broker ({{: format)
    (["submit", "--rois", '[{{"name": "a"}}]', "{notimg}"], "--rois[0].box"),
])
def test_each_usage_error_is_one_line_and_exit_2_before_any_work(tmp_path, args, says):
    (tmp_path / "notimg.png").write_bytes(b"not an image")
    run = edge_ocr(*[a.format(notimg=tmp_path / "notimg.png") for a in args])
    assert run.returncode == 2, run.stderr
    assert says in run.stderr and "Traceback" not in run.stderr


def test_eval_scores_a_small_lines_manifest(eval_dev, tmp_path):
    samples = line_samples(eval_dev, "SROIE2019-task1", 5)
    manifest = tmp_path / "labels.tsv"
    manifest.write_text("".join("%s\t%s\ten\tmini\n" % (p, t) for p, t in samples), encoding="utf-8")
    report = tmp_path / "report.json"
    run = edge_ocr("eval", str(manifest), "--json", str(report))
    assert run.returncode == 0, run.stderr
    assert "| mini | 5 |" in run.stdout
    data = json.loads(report.read_text())
    assert data["kind"] == "lines" and data["sources"]["mini"]["n"] == 5
    assert data["sources"]["mini"]["alnum"] >= 60
    assert data["recorded_as"]["pack"] == "ppocrv6-small" and data["recorded_as"]["full_run"] is True


def test_eval_times_only_the_images_it_read_and_fails_when_it_read_none(eval_dev, tmp_path):
    """Missing files are error rows, scored as reading nothing; their 0 ms pulled p50 down, and a
    manifest of nothing readable printed a table of zeros and exited 0."""
    samples = line_samples(eval_dev, "SROIE2019-task1", 2)
    manifest = tmp_path / "labels.tsv"
    rows = ["%s\t%s\ten\tmini\n" % (p, t) for p, t in samples] + ["%s/gone-%d.png\tX\ten\tmini\n" % (tmp_path, i)
                                                                  for i in range(5)]
    manifest.write_text("".join(rows), encoding="utf-8")
    report = tmp_path / "report.json"
    run = edge_ocr("eval", str(manifest), "--json", str(report))
    assert run.returncode == 0, run.stderr
    mini = json.loads(report.read_text())["sources"]["mini"]
    assert mini["n"] == 7 and mini["errors"] == 5 and mini["p50_ms"] > 0  # the median of the two read
    manifest.write_text("".join(rows[2:]), encoding="utf-8")
    run = edge_ocr("eval", str(manifest))
    assert run.returncode == 1 and "no image of" in run.stderr


def test_tune_refuses_a_state_dir_it_cannot_write_before_measuring(small_disk):
    """On a read-only state dir tune measured every variant (minutes on a Pi), then failed to save."""
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True, timeout=30)
    run = edge_ocr("tune", "--state-dir", str(small_disk / "state"), "--runs", "1")
    assert run.returncode == 2 and "tune: cannot save the result" in run.stderr and "nothing measured" in run.stderr
    assert "| precision |" not in run.stdout


def test_bench_refuses_what_it_cannot_measure_before_any_child_runs(tmp_path):
    """A missing reference venv was named only after our own configurations were measured; a
    selection with nothing to measure printed an empty table and exited 0."""
    run = edge_ocr("bench", "--set", "lines", "--limit", "1", "--no-det", "--threads", "1", "--compare", "rapidocr",
                   "--ref-root", str(tmp_path), cwd=tmp_path)  # from anywhere: the script is found in the checkout
    assert run.returncode == 2 and "no venv at %s/venv-rapidocr" % tmp_path in run.stderr and "|" not in run.stdout
    run = edge_ocr("bench", "--set", "lines", "--limit", "1", "--no-det", "--packs", "ppocrv6-tiny",
                   "--precisions", "int8")
    assert run.returncode == 2 and "nothing to measure" in run.stderr
    run = edge_ocr("bench", "--memory", "--set", "lines", "--limit", "1", "--compare", "rapidocr")  # was ignored
    assert run.returncode == 2 and "bench --memory does not take --compare" in run.stderr


def test_recording_accuracy_is_a_build_step_on_a_models_tree(eval_dev, tmp_path, monkeypatch):
    """models/record_accuracy.py files an eval report in a manifest of the tree it is given; the
    CLI itself never writes a manifest (no --record)."""
    monkeypatch.syspath_prepend(str(REPO / "models"))
    from record_accuracy import record

    from edge_ocr.engine.manifest import Manifest

    samples = line_samples(eval_dev, "IIIT5K-test", 4)
    manifest = tmp_path / "labels.tsv"
    manifest.write_text("".join("%s\t%s\ten\tmini\n" % (p, t) for p, t in samples), encoding="utf-8")
    tree = tmp_path / "models" / "ppocrv6-small"
    tree.mkdir(parents=True)
    shutil.copy(REPO / "models" / "ppocrv6-small" / "manifest.json", tree)
    assert edge_ocr("eval", str(manifest), "--record").returncode == 2  # not an option any more
    report = tmp_path / "report.json"
    assert edge_ocr("eval", str(manifest), "--precision", "fp32", "--json", str(report)).returncode == 0
    data = json.loads(report.read_text())
    assert record(data, tmp_path / "models") == tree / "manifest.json"
    filed = Manifest.from_json((tree / "manifest.json").read_text()).accuracy[data["recorded_as"]["eval_set"]]
    assert filed["fp32"]["sources"]["mini"]["n"] == 4 and filed["fp32"]["engine"] == data["engine"]
    limited = dict(data, recorded_as=dict(data["recorded_as"], full_run=False))
    with pytest.raises(ValueError, match="full run"):
        record(limited, tmp_path / "models")
    with pytest.raises(ValueError, match="another engine"):
        record({k: v for k, v in data.items() if k != "recorded_as"}, tmp_path / "models")


def test_models_list_and_verify():
    listed = edge_ocr("models", "list")
    assert listed.returncode == 0 and "ppocrv6-small" in listed.stdout and "(default)" in listed.stdout
    verified = edge_ocr("models", "verify")
    assert verified.returncode == 0 and "FAILED" not in verified.stdout


def _models_env(root) -> dict[str, str]:
    return {**os.environ, "EDGE_OCR_MODELS": str(root)}


def test_models_verify_fails_when_it_finds_nothing_to_check(tmp_path):
    # install.sh relies on `models verify`: an empty or missing models folder passed it (exit 0, no output)
    for root in (tmp_path / "none", tmp_path):
        for action in ("verify", "list"):
            done = subprocess.run([sys.executable, "-m", "edge_ocr", "models", action], capture_output=True,
                                  text=True, timeout=60, env=_models_env(root))
            assert done.returncode == 1, done
            assert "ppocrv6-small: the default pack is missing" in done.stdout


def test_models_verify_checks_every_pack_past_a_broken_one(tmp_path):
    models = Path(__file__).resolve().parents[1] / "models"
    shutil.copytree(models, tmp_path / "models")
    (tmp_path / "models" / "crnn" / "manifest.json").write_text("{", encoding="utf-8")  # sorts first
    (tmp_path / "models" / "stray").mkdir()
    (tmp_path / "models" / "stray" / "rec.onnx").write_bytes(b"x")
    done = subprocess.run([sys.executable, "-m", "edge_ocr", "models", "verify", "-v"], capture_output=True,
                          text=True, timeout=300, env=_models_env(tmp_path / "models"))
    assert done.returncode == 1, done
    assert "ppocrv6-small: ok" in done.stdout and "ppocrv6-tiny: ok" in done.stdout, done.stdout
    assert "crnn: malformed manifest" in done.stdout and "stray: model files without a manifest.json" in done.stdout


def test_models_verify_names_a_file_riding_along_in_a_pack_and_a_missing_notice(tmp_path):
    """install.sh copies models/ whole: a file a pack's manifest does not list ships too (eval-dev
    data must never), and a pack without its LICENSE or NOTICE ships weights without their terms."""
    models = Path(__file__).resolve().parents[1] / "models"
    shutil.copytree(models, tmp_path / "models")
    (tmp_path / "models" / "ppocrv6-tiny" / "calibration.npy").write_bytes(b"\x93NUMPY")
    (tmp_path / "models" / "ppocrv6-tiny" / "NOTICE").unlink()
    done = subprocess.run([sys.executable, "-m", "edge_ocr", "models", "verify"], capture_output=True,
                          text=True, timeout=300, env=_models_env(tmp_path / "models"))
    assert done.returncode == 1 and "ppocrv6-tiny: FAILED" in done.stdout, done
    assert "ppocrv6-tiny: NOTICE missing" in done.stdout
    assert "ppocrv6-tiny: calibration.npy is not in its manifest" in done.stdout


def test_a_pack_named_on_the_command_line_that_does_not_exist_is_a_usage_error():
    verified = edge_ocr("models", "verify", "ppocrv6-smal")
    assert verified.returncode == 2 and "pack: model pack 'ppocrv6-smal' not found" in verified.stderr
    read = edge_ocr("ocr", "--pack", "nope", "x.png")
    assert read.returncode == 2 and "--pack: model pack 'nope' not found" in read.stderr


def test_check_names_engine_pack_for_a_pack_that_does_not_exist(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[engine]\npack = "ppocrv6-smal"\n[mqtt]\nenabled = false\n')
    done = edge_ocr("check", "-c", str(config))
    assert done.returncode == 2, done  # a config error, as any other typo
    assert "engine.pack: model pack 'ppocrv6-smal' not found" in done.stderr


@pytest.mark.parametrize("flags, spinning", [([], True), (["--no-spinning"], False)])
def test_engine_flags_set_the_engine_table(flags, spinning):
    from edge_ocr.cli import _engine_options, build_parser

    args = build_parser().parse_args(["ocr", "x.png", "--no-fast-reader", *flags])
    table = _engine_options(args)
    assert table.spinning is spinning and table.to_options().allow_spinning is spinning
    assert table.fast_reader is False


def test_a_reload_asked_while_the_daemon_still_reads_its_config_does_not_end_it(tmp_path):
    from tests.helpers import write_config

    text = write_config(tmp_path, None).read_text()
    fifo = tmp_path / "edge-ocr.fifo"
    os.mkfifo(fifo)  # the daemon blocks reading it: a start as slow as a Pi's, held still
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        daemon = subprocess.Popen([sys.executable, "-m", "edge_ocr", "run", "-c", str(fifo)], stdout=out,
                                  stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        with open(fifo, "w") as config:  # opens once the daemon opened it to read: inside `run`
            daemon.send_signal(signal.SIGHUP)  # SIGHUP's default would end the process here
            config.write(text)
        assert wait_until(lambda: "daemon ready" in log.read_text() or daemon.poll() is not None, 60)
        assert daemon.poll() is None, log.read_text()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()


def test_a_name_a_client_sent_cannot_start_a_journal_entry_of_its_own(capsys, monkeypatch):
    """`{"source": "nope\n<2>... (FORGED)"}` on <p>/cmd/capture was logged raw: under journald the
    second line became an entry of its own, at priority 2 (critical)."""
    import logging

    from edge_ocr.cli import setup_logging

    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # both restored after the test
    monkeypatch.setattr(logging.getLogger(), "level", logging.getLogger().level)
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    setup_logging(False)
    logging.getLogger("edge_ocr.sinks.mqtt").info("command capture source=%s", "nope\n<2>edge_ocr.app: FORGED")
    try:
        raise RuntimeError("a traceback keeps its lines")
    except RuntimeError:
        logging.getLogger("edge_ocr.app").exception("failed\r\nagain")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "<6>edge_ocr.sinks.mqtt: command capture source=nope\\x0a<2>edge_ocr.app: FORGED"
    assert lines[1] == "<3>edge_ocr.app: failed\\x0d\\x0aagain" and lines[2].startswith("Traceback")
