"""Dev only: int8 variants of the default pack's detector, timed and scored per half of eval-dev.

The shipped detector (``models/build.py``) keeps its stem fp32: its first nine nodes, whose
convolutions on 3 and 16 channels at half resolution are ~40 % of its time at 1 thread (ORT
profile, 960x544). Candidates, each built with ``build.quantize`` (MinMax on the same
calibration pages):

* ``stem_int8``: every node int8;
* ``stem_int8_gelu``: the same with the backbone's GELUs fused first (``static_rec.fuse_gelu``);
* ``gelu``: the shipped stem kept fp32, GELUs fused;
* ``stem_c0`` (``_gelu``): only the first convolution (on the RGB input) kept fp32;
* ``stem_int8_gelu_p<q>``: every node int8, GELUs fused, calibrated at percentile q on 96 tiles of
  320 x 320 px from half-a pages (the percentile calibrator needs inputs of one shape).

Time: each variant and fp32 run interleaved on 12 receipts at 1 thread, as a ratio to the
shipped one. Accuracy: the engine (2 threads) with its detector swapped, det F1 / e2e F1 / page
CER per source and half (``bench/halves.py``) of eval-dev pages and ``zh/pages``.

    .venv/bin/python bench/det_variants.py [--variants stem_int8,stem_int8_gelu,gelu] [--work DIR]

``--work`` keeps the built variants and each detector's page predictions (keyed by the model's
sha256) for a later run; without it everything is made afresh in a temporary directory.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "models"))
sys.path.insert(0, str(ROOT / "bench"))
import build  # noqa: E402
import measure_int8  # noqa: E402
import static_rec  # noqa: E402
from halves import halves  # noqa: E402

from edge_ocr.engine.ocr import EngineOptions, OcrEngine  # noqa: E402
from edge_ocr.tools import scoring  # noqa: E402
from edge_ocr.tools.evaluate import PageSample, load_pages  # noqa: E402

EVAL_DEV = ROOT.parent / "shared" / "eval-dev"
MANIFESTS = (EVAL_DEV / "pages" / "labels.jsonl", EVAL_DEV / "zh" / "pages" / "labels.jsonl")
PACK = ROOT / "models" / "ppocrv6-small"
EVERY_NODE = build.Int8Recipe("static", "every node int8")
FIRST_CONV_FP32 = build.Int8Recipe("static", "first conv fp32", exclude_nodes=("Conv.0", "Relu.0"))
# name: (recipe, GELUs fused, calibration: None = the build's (MinMax on its 16 pages), else
# (percentile, tile) = that percentile on tile x tile crops of half-a pages)
RECIPES: dict[str, tuple[build.Int8Recipe, bool, tuple[float, int] | None]] = {
    "stem_int8": (EVERY_NODE, False, None),
    "stem_int8_gelu": (EVERY_NODE, True, None),
    "gelu": (build.Int8Recipe("static", "stem fp32", exclude_nodes=build.V6_SMALL_DET_STEM), True, None),
    "stem_c0": (FIRST_CONV_FP32, False, None),
    "stem_c0_gelu": (FIRST_CONV_FP32, True, None),
    "stem_int8_gelu_p99.99": (EVERY_NODE, True, (99.99, 320)),
    "stem_int8_gelu_p99.999": (EVERY_NODE, True, (99.999, 320)),
    "stem_int8_gelu_p100": (EVERY_NODE, True, (100.0, 320)),
}
CALIBRATION_TILES = 96
GROUPS = {"SROIE": ("SROIE",), "IC15": ("ICDAR",), "zh": ()}


def make_variant(name: str, out: Path) -> Path:
    """Build one candidate with the pack's own quantize(); GELUs fused after ORT's pre-processing."""
    path = out / f"{name}.onnx"
    if path.exists():
        return path
    recipe, fuse, calibration = RECIPES[name]
    pre_process, quantize_static, tensors = build.quant_pre_process, build.quantize_static, build.calibration_tensors

    def pre_process_and_fuse(source: Path, target: Path, **kwargs: object) -> None:
        pre_process(source, target, **kwargs)
        model = onnx.load(target)
        static_rec.fuse_gelu(model)
        onnx.save(model, target)

    def percentile_static(*args: object, **kwargs: object) -> None:
        assert calibration is not None
        kwargs["calibrate_method"] = build.CalibrationMethod.Percentile
        kwargs["extra_options"] = {"CalibPercentile": calibration[0]}
        quantize_static(*args, **kwargs)

    if fuse:
        build.quant_pre_process = pre_process_and_fuse
    if calibration is not None:  # the percentile calibrator needs tensors of one shape: tiles
        build.quantize_static = percentile_static
        build.calibration_tensors = lambda spec, eval_dev: half_a_tiles(calibration[1])
    try:
        with tempfile.TemporaryDirectory() as work:
            spec = next(p for p in build.PACKS if p.name == "ppocrv6-small").det
            path.write_bytes(build.quantize(spec, recipe, (PACK / "det.fp32.onnx").read_bytes(), EVAL_DEV, Path(work)))
    finally:
        build.quant_pre_process, build.quantize_static, build.calibration_tensors = pre_process, quantize_static, tensors
    return path


def half_a_tiles(tile: int) -> list[np.ndarray]:
    """CALIBRATION_TILES tile x tile crops of the detector's input at random places (seeded), spread
    over the half-a eval-dev pages, SROIE and IC15 alike."""
    pages = [s for m in MANIFESTS[:1] for s in load_pages(m)]
    half = halves({s.path.name: s.source for s in pages})
    chosen = [s.path for s in pages if half[s.path.name] == "a"]
    tiles: list[np.ndarray] = []
    per_page = max(1, CALIBRATION_TILES // len(chosen) + 1)
    for path in chosen:
        x = measure_int8.det_tensor(measure_int8.read_bgr(path))
        height, width = x.shape[2:]
        rng = np.random.default_rng(len(tiles))
        for _ in range(per_page):
            top = int(rng.integers(0, max(1, height - tile + 1)))
            left = int(rng.integers(0, max(1, width - tile + 1)))
            crop = x[:, :, top:top + tile, left:left + tile]
            if crop.shape[2:] == (tile, tile):
                tiles.append(np.ascontiguousarray(crop))
    return tiles[:CALIBRATION_TILES]


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.enable_cpu_mem_arena = options.enable_mem_pattern = False
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def timing(paths: dict[str, Path], reps: int = 3) -> None:
    """Each variant on 12 receipts in turn, 1 thread; ratios to the shipped detector."""
    pages = [s.path for s in load_pages(MANIFESTS[0])][::9][:12]
    tensors = [measure_int8.det_tensor(measure_int8.read_bgr(p)) for p in pages]
    sessions = {name: session(path, 1) for name, path in paths.items()}
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for rep in range(reps + 1):
        for x in tensors:
            for name, s in sessions.items():
                started = time.perf_counter()
                s.run(None, {s.get_inputs()[0].name: x})
                if rep:  # the first pass warms up
                    times[name].append(time.perf_counter() - started)
    shipped = np.array(times["shipped"])
    for name, t in times.items():
        ratios = np.array(t) / shipped
        print("%-16s %6.1f ms per page  vs shipped: median %.3f, total %.3f"
              % (name, 1000 * np.mean(t), np.median(ratios), np.sum(t) / shipped.sum()))


def in_group(sample: PageSample, prefixes: tuple[str, ...]) -> bool:
    if prefixes:
        return sample.source.startswith(prefixes)
    return not sample.source.startswith(("SROIE", "ICDAR"))


def score(paths: dict[str, Path], out: Path) -> None:
    engine = OcrEngine(EngineOptions(threads=2))
    assert engine.det is not None
    truth = [s for m in MANIFESTS for s in load_pages(m)]
    half = halves({s.path.name: s.source for s in truth})
    print("| detector | " + " | ".join("%s %s" % (g, h) for g in GROUPS for h in "ab") + " |  (det F1 / e2e F1 / page CER)")
    print("|---|" + "---|" * 6)
    for name, path in paths.items():
        cache = out / f"{name}-{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}.predictions.pkl"
        if not cache.exists():
            engine.det._session = session(path, 2)
            engine.det.input_name = engine.det._session.get_inputs()[0].name
            predictions = {}
            for sample in truth:
                output = engine(sample.path.read_bytes())
                predictions[sample.path.name] = ([line.box for line in output.lines], [line.text for line in output.lines])
            cache.write_bytes(pickle.dumps(predictions))
        predictions = pickle.loads(cache.read_bytes())
        cells = []
        for prefixes in GROUPS.values():
            for h in "ab":
                matches = [scoring.match_page(s.boxes, s.texts, s.ignored,
                                              [np.asarray(b, np.float32) for b in predictions[s.path.name][0]],
                                              predictions[s.path.name][1])
                           for s in truth if in_group(s, prefixes) and half[s.path.name] == h]
                detections, truths = sum(m.detections for m in matches), sum(m.truths for m in matches)
                det_f1 = scoring.f1(sum(m.true_positives for m in matches), detections, truths)[2]
                e2e_f1 = scoring.f1(sum(m.e2e_hits for m in matches), detections, truths)[2]
                cer = np.mean([m.page_edits / m.page_length for m in matches if m.page_length])
                cells.append("%.1f / %.1f / %.1f" % (100 * det_f1, 100 * e2e_f1, 100 * cer))
        print("| %s | %s |" % (name, " | ".join(cells)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(RECIPES))
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)
    args.work = args.work or Path(tempfile.mkdtemp(prefix="edge-ocr-det-"))
    args.work.mkdir(parents=True, exist_ok=True)
    paths = {"fp32": PACK / "det.fp32.onnx", "shipped": PACK / "det.int8.onnx"}
    paths |= {name: make_variant(name, args.work) for name in args.variants.split(",")}
    timing(paths)
    score(paths, args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
