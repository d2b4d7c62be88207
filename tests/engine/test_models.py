"""edge_ocr.engine.models: the shipped packs are intact, and tampering is caught."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from edge_ocr.engine import models
from edge_ocr.engine.ocr import EngineOptions, OcrEngine
from edge_ocr.errors import ConfigError, ModelError

PACKS = models.list_packs()


def test_the_default_pack_is_shipped():
    assert models.DEFAULT_PACK in PACKS
    assert models.load_pack("default").name == models.DEFAULT_PACK


@pytest.mark.parametrize("name", PACKS)
def test_every_shipped_file_matches_its_manifest(name):
    pack = models.load_pack(name)
    assert models.verify_pack(pack) == []
    for stage, variant in pack.files():
        assert variant.path.is_file(), (stage, variant)
        assert pack.stages[stage].source.package, "provenance missing for %s %s" % (name, stage)


@pytest.mark.parametrize("name", PACKS)
def test_manifest_records_provenance_licence_and_accuracy(name):
    pack = models.load_pack(name)
    assert pack.licence
    assert pack.accuracy, "run `edge-ocr eval` and record the pack's accuracy in its manifest"
    for stage in pack.stages.values():
        if stage.kind == "ctc":
            assert stage.charset is not None and stage.charset.num_classes > 2


def _copy_pack(tmp_path: Path, name: str) -> Path:
    """A copy of the models root with ``name`` and the shared files it references."""
    root = models.models_root()
    pack = models.load_pack(name)
    for _, variant in pack.files():
        relative = variant.path.relative_to(root)
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(variant.path, tmp_path / relative)
    for item in pack.directory.iterdir():
        if item.suffix in (".json", ".txt"):
            shutil.copy(item, tmp_path / name / item.name)
    manifest = json.loads((pack.directory / "manifest.json").read_text(encoding="utf-8"))
    for stage in manifest["stages"].values():
        if "charset" in stage:  # a stage shared from another pack reads that pack's charset
            charset = (pack.directory / stage["charset"]["file"]).resolve()
            target = tmp_path / charset.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(charset, target)
    return tmp_path


def test_a_flipped_byte_is_reported_and_refused(tmp_path, monkeypatch):
    root = _copy_pack(tmp_path, models.DEFAULT_PACK)
    pack = models.load_pack(models.DEFAULT_PACK, root)
    victim = pack.stages["rec"].variants["fp32"].path
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))

    problems = models.verify_pack(pack)
    assert len(problems) == 1 and "sha256 mismatch" in problems[0] and victim.name in problems[0]
    monkeypatch.setenv("EDGE_OCR_MODELS", str(root))
    with pytest.raises(ModelError, match="sha256 mismatch"):
        OcrEngine(EngineOptions(pack=models.DEFAULT_PACK, threads=1))


def test_a_charset_with_two_characters_swapped_is_refused(tmp_path):
    """The class count stays the same, so nothing else would notice; every 4 would read as 7."""
    root = _copy_pack(tmp_path, models.DEFAULT_PACK)
    manifest = json.loads((root / models.DEFAULT_PACK / "manifest.json").read_text(encoding="utf-8"))
    charset = (root / models.DEFAULT_PACK / manifest["stages"]["rec"]["charset"]["file"]).resolve()
    lines = charset.read_text(encoding="utf-8").split("\n")
    four, seven = lines.index("4"), lines.index("7")
    lines[four], lines[seven] = lines[seven], lines[four]
    charset.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(ModelError, match=r"charset .*sha256 mismatch"):
        models.load_pack(models.DEFAULT_PACK, root)


def test_a_missing_pack_names_the_ones_available():
    with pytest.raises(ModelError, match="not found.*available: .*%s" % models.DEFAULT_PACK):
        models.load_pack("no-such-pack")


def _stage(*variants: tuple[str, float]) -> models.Stage:
    return models.Stage(
        name="det",
        kind="db",
        variants={p: models.Variant(p, Path(p), "0" * 64, speed) for p, speed in variants},
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    )


def test_auto_precision_picks_the_faster_shipped_variant():
    assert models.choose_variant(_stage(("fp32", 1.0), ("int8", 0.3)), "auto").precision == "int8"
    assert models.choose_variant(_stage(("fp32", 1.0), ("int8", 1.2)), "auto").precision == "fp32"
    assert models.choose_variant(_stage(("fp32", 1.0)), "int8").precision == "fp32"
    with pytest.raises(ConfigError, match=r"engine\.precision"):
        models.choose_variant(_stage(("fp32", 1.0)), "fp16")


def test_big_little_uses_only_the_big_cores():
    # A Rockchip RK3399-like layout: four Cortex-A53 (LITTLE) and two Cortex-A72 (big).
    capacities = {0: 485, 1: 485, 2: 485, 3: 485, 4: 1024, 5: 1024}
    assert models.big_cores(set(range(6)), capacities) == {4, 5}
    assert models.big_cores({0, 1}, capacities) == {0, 1}  # only LITTLE ones allowed to us
    assert models.big_cores({0, 1, 2, 3}, {}) == {0, 1, 2, 3}  # homogeneous x86 / Pi 4


def test_cpu_capacities_reads_sysfs_layout(tmp_path):
    for cpu, capacity in ((0, 446), (1, 1024)):
        (tmp_path / ("cpu%d" % cpu)).mkdir()
        (tmp_path / ("cpu%d" % cpu) / "cpu_capacity").write_text("%d\n" % capacity)
    assert models.cpu_capacities(tmp_path) == {0: 446, 1: 1024}
    assert models.auto_threads() >= 1


@pytest.mark.parametrize("name", PACKS)
def test_shipped_int8_variants_passed_their_accuracy_gate(name):
    """An int8 file ships only when `edge-ocr eval` put it within 1 point of fp32 on eval-dev:
    line accuracy for recognisers, end-to-end page F1 for detectors."""
    pack = models.load_pack(name)
    gates = {"rec": ("eval-dev/lines", "alnum"), "det": ("eval-dev/pages", "e2e_f1")}
    for stage, (eval_set, metric) in gates.items():
        if stage not in pack.stages or "int8" not in pack.stages[stage].variants:
            continue
        recorded = pack.accuracy[eval_set]
        fp32 = recorded["fp32"]["sources"]["all"][metric]
        int8 = recorded["int8"]["sources"]["all"][metric]
        assert int8 >= fp32 - 1.0, "%s %s int8 %s=%.2f vs fp32 %.2f" % (name, stage, metric, int8, fp32)


def test_the_int8_detector_agrees_with_fp32_on_every_x86_cpu(eval_dev):
    """On x86 without VNNI (AVX2 only) ONNX Runtime adds u8 x s8 products in pairs into int16, which
    saturates with full-range 8-bit weights. The shipped detector has 7-bit weights on the
    convolutions where that happened, so without exact sums (``session.x64quantprecision``) its map
    agrees with fp32 as on a VNNI CPU: on this IC15 photo binary IoU 0.789 with the all-8-bit file's
    saturating sums on an AMD EPYC (AVX2), 0.965 with exact ones, and above 0.93 here either way."""
    import cv2

    from edge_ocr.engine import preprocess

    engine = OcrEngine(EngineOptions(threads=2, precision="int8"))
    assert engine.det is not None and engine.det.variant.precision == "int8"
    with pytest.raises(RuntimeError):  # no exact sums asked for: ONNX Runtime's fast kernels
        engine.det.session.get_session_options().get_session_config_entry("session.x64quantprecision")
    stage = engine.det.stage
    fp32, int8 = models.make_session(stage.variants["fp32"], 2), engine.det.session
    image = cv2.imread(str(eval_dev / "pages" / "ic15_0e596fe8d8a8.jpg"))
    resized, _ = preprocess.resize_for_detection(image, 960, stage.multiple)
    x = preprocess.normalize(resized, stage.mean, stage.std)[None]
    ref, got = (s.run(None, {s.get_inputs()[0].name: x})[0] > 0.3 for s in (fp32, int8))
    engine.close()
    assert (ref & got).sum() / (ref | got).sum() > 0.93


def test_a_lazy_model_makes_one_session_on_its_first_run_whatever_the_threads(monkeypatch):
    pack = models.load_pack("default")
    stage = pack.stages["rec_fast"]
    made = []
    real = models.make_session

    def counted(variant, *args):
        made.append(variant.path.name)
        return real(variant, *args)

    monkeypatch.setattr(models, "make_session", counted)
    model = models.Model(stage, models.choose_variant(stage, "int8"), 1, lazy=True)
    assert not model.loaded and made == [] and model.stage is stage
    batch = np.zeros((1, 3, stage.height, 160), np.float32)
    start = threading.Barrier(4)

    def first_run() -> None:
        start.wait(10)
        model.run(batch)

    threads = [threading.Thread(target=first_run, name="test-lazy-%d" % i) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert model.loaded and len(made) == 1 and model.input_name


def _cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def test_spinning_threads_stop_when_a_run_returns():
    """With spinning (the default), a 2-thread session's worker busy-waits while a run lasts and
    stops when it returns (session.force_spinning_stop): after the run, the process is idle.
    Without the stop, ONNX Runtime's worker went on spinning for ~46 ms of CPU after every run."""
    pack = models.load_pack("default")
    stage = pack.stages["rec_zh"]
    model = models.Model(stage, models.choose_variant(stage, "int8"), 2, allow_spinning=True)
    config = model.session.get_session_options().get_session_config_entry
    assert config("session.intra_op.allow_spinning") == "1" and config("session.force_spinning_stop") == "1"
    batch = np.zeros((1, 3, stage.height, 320), np.float32)
    after = []
    for _ in range(5):
        model.run(batch)
        start = _cpu_s()
        threading.Event().wait(0.2)
        after.append(_cpu_s() - start)
    # CPU seconds, not wall time: what the process burned while it had nothing to do.
    assert sorted(after)[2] < 0.01, after


@pytest.mark.parametrize("setting, writes", [(None, False), ("0", True)])
def test_onnx_runtime_sends_no_telemetry_unless_the_environment_asks(tmp_path, setting, writes):
    """ONNX Runtime's Linux wheels (1.32) keep a device ID and a queue of usage events for Microsoft
    under ~/.cache/Microsoft/DeveloperTools and upload them, unless ORT_DISABLE_TELEMETRY is set
    before they load: the engine sets it. What a user puts in the environment wins."""
    # ONNX Runtime keeps quiet by itself where a CI system's variable is set (CI=true in .ci/run): without
    # them, as on a device, only ORT_DISABLE_TELEMETRY decides.
    ci = {"CI", "TF_BUILD", "GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "TRAVIS", "JENKINS_URL", "CODEBUILD_BUILD_ID",
          "BUILDKITE", "TEAMCITY_VERSION", "APPVEYOR", "SYSTEM_TEAMFOUNDATIONCOLLECTIONURI"}
    env = {k: v for k, v in os.environ.items() if k not in {"ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME", *ci}}
    env["HOME"] = str(tmp_path)
    if setting is not None:
        env["ORT_DISABLE_TELEMETRY"] = setting
    image = tmp_path / "word.png"
    image.write_bytes(_word_png())
    run = subprocess.run([sys.executable, "-m", "edge_ocr", "ocr", "--no-det", str(image)], capture_output=True,
                         text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / ".cache" / "Microsoft").exists() is writes


def _word_png() -> bytes:
    import cv2

    image = np.full((48, 200, 3), 255, np.uint8)
    cv2.putText(image, "TOTAL", (8, 36), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (0, 0, 0), 2)
    return cv2.imencode(".png", image)[1].tobytes()


def test_a_packs_version_names_its_content_not_the_manifests_schema():
    """The manifest's "version" is its schema's ("1" in every build): the pack's version adds what it
    reads with, so results stored or tunings made by an older pack are known as such."""
    manifest = models.read_manifest(models.load_pack(models.DEFAULT_PACK).directory / "manifest.json")
    shipped = models.content_id(manifest)
    assert models.load_pack(models.DEFAULT_PACK).version == "1+" + shipped
    det = manifest.stages["det"]
    rebuilt = manifest.stages | {"det": dataclasses.replace(det, variants={
        p: dataclasses.replace(v, sha256="0" * 64 if p == "int8" else v.sha256) for p, v in det.variants.items()})}
    thresholds = manifest.stages | {"det": dataclasses.replace(det, postprocess={**(det.postprocess or {}), "box_thresh": 0.5})}
    remeasured = manifest.stages | {"det": dataclasses.replace(det, variants={
        p: dataclasses.replace(v, speed_vs_fp32=0.5) for p, v in det.variants.items()})}
    assert models.content_id(dataclasses.replace(manifest, stages=rebuilt)) != shipped  # another file
    assert models.content_id(dataclasses.replace(manifest, stages=thresholds)) != shipped  # read otherwise
    assert models.content_id(dataclasses.replace(manifest, stages=remeasured)) == shipped  # a build's timing
    assert models.content_id(dataclasses.replace(manifest, accuracy={})) == shipped  # recorded figures


def test_the_reading_id_changes_with_what_reads_otherwise_and_nothing_else():
    def reading(**options) -> str:
        return OcrEngine(EngineOptions(lazy_sessions=True, threads=1, **options)).reading_id

    default = reading()
    assert reading(allow_spinning=False) == reading(page_line_threads=2) == reading(verify_checksums=False) == default
    assert OcrEngine(EngineOptions(threads=2)).reading_id == default  # sessions up front, two threads
    assert len({default, reading(precision="fp32"), reading(det_limit_side=1280), reading(recheck_below=0.9)}) == 4
