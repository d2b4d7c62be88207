"""Dev only: where one model's time goes, by operator type and by node, on real eval-dev input.

Runs one model file of a pack in its own ONNX Runtime session with profiling on (arena and
memory patterns off as in the engine, no spinning, ``--threads`` intra-op threads) over the lines of a few eval-dev receipts (a
recogniser) or over the receipts themselves (the detector), then sums each kernel's time:

    .venv/bin/python bench/op_profile.py rec_page_narrow [--threads 1] [--pages 3] [--top 12]
    .venv/bin/python bench/op_profile.py det

The stage names are the pack's (``det``, ``rec``, ``rec_page``, ``rec_page_narrow``, ``rec_zh``, ...).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import cv2
import onnxruntime as ort

from edge_ocr.engine import preprocess, recognize
from edge_ocr.engine.models import choose_variant
from edge_ocr.engine.ocr import EngineOptions, OcrEngine

EVAL_DEV = Path(__file__).resolve().parents[2] / "shared" / "eval-dev"


def inputs(engine: OcrEngine, stage: str, pages: int) -> list:
    """The tensors the stage would be given on the first ``pages`` eval-dev receipts."""
    images = [cv2.imread(str(p)) for p in sorted((EVAL_DEV / "pages").glob("sroie_*"))[:pages]]
    det = engine.det
    assert det is not None
    if stage == "det":
        return [preprocess.normalize(preprocess.resize_for_detection(image, engine.options.det_limit_side)[0],
                                     det.stage.mean, det.stage.std)[None] for image in images]
    spec = engine.pack.stages[stage]
    tensors = []
    for image in images:
        quads, _ = engine._detect(image, {}, engine.options.det_limit_side)
        for quad in quads:
            crop = preprocess.crop_quad(image, quad)
            width = recognize.batch_width([crop.shape[1] / max(crop.shape[0], 1)], spec.height,
                                          engine.options.page_min_width, spec.height * 64)
            tensors.append(preprocess.resize_for_recognition(crop, spec.height, width)[None])
    return tensors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("stage")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pages", type=int, default=3)
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    engine = OcrEngine(EngineOptions(threads=args.threads))
    variant = choose_variant(engine.pack.stages[args.stage], args.precision)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    options.enable_profiling = True
    options.profile_file_prefix = "/tmp/edge-ocr-op-profile"
    session = ort.InferenceSession(str(variant.path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    tensors = inputs(engine, args.stage, args.pages)
    if not tensors:
        print("no input: the first %d eval-dev receipts gave no lines" % args.pages)
        return 1
    for tensor in tensors:
        session.run(None, {name: tensor})
    profile = Path(session.end_profiling())
    events = json.loads(profile.read_text(encoding="utf-8"))
    profile.unlink()
    by_op: collections.Counter[str] = collections.Counter()
    by_node: collections.Counter[tuple[str, str]] = collections.Counter()
    shapes: dict[tuple[str, str], str] = {}
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        op, node = event["args"].get("op_name", "?"), event["name"][: -len("_kernel_time")]
        by_op[op] += event["dur"]
        by_node[(op, node)] += event["dur"]
        shapes[(op, node)] = str([next(iter(t.values())) for t in event["args"].get("input_type_shape", [])][:1])
    total = sum(by_op.values())
    print("%s (%s), %d runs, %d thread(s): %.1f ms of kernels per run"
          % (args.stage, variant.path.name, len(tensors), args.threads, total / 1000 / len(tensors)))
    print("| operator | share | ms per run |\n|---|---|---|")
    for op, duration in by_op.most_common(args.top):
        print("| %s | %.1f %% | %.2f |" % (op, 100 * duration / total, duration / 1000 / len(tensors)))
    print("\n| node | operator | first input's shape (last run) | share |\n|---|---|---|---|")
    for (op, node), duration in by_node.most_common(args.top):
        print("| %s | %s | %s | %.1f %% |" % (node, op, shapes[(op, node)], 100 * duration / total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
