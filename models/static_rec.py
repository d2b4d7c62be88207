"""Static QDQ int8 of the recognisers (the PP-OCRv6 small page reader, the PP-OCRv4 plate specialist):
the parts build.py needs beyond its det recipe.

build.py's ``static-rec`` recipe: the source converted to opset 13 and pre-processed as for every
static recipe, then each exact-erf GELU subgraph fused into one Gelu node (``fuse_gelu``: without it
the QDQ model is only ~0.7x fp32), then quantize_static with percentile calibration on a fixed list of
half-a eval-dev line crops (``calibration_lines``; half b stays clean for confirmation) and the
``SMALL_KEPT_FP32`` nodes left in fp32 (the plate specialist: half-a plates alone, ``V4_KEPT_FP32``). Byte-reproducible for a given onnx/onnxruntime version.
Calibration peaks at ~12 GB RSS (ORT keeps every intermediate tensor of the 168 crops for the histograms).

Measured (onnxruntime 1.32, AMD EPYC with AVX-512 VNNI, 2 threads, 300 crops): 0.55-0.61x fp32 per crop
at p50; 5-14 % of crops read differently from fp32, yet accuracy on eval-dev lines stays within the paired
bootstrap interval of fp32 on both halves, and on eval-dev pages e2e F1 is within 0.2 of fp32. PP-OCRv6
tiny is not worth it: fully quantized only 0.86x fp32, and single convs already change 10 % of its texts.
"""
from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import onnx
import onnx.numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import halves

SEED = "edge-ocr-rec-calib-1"
CALIBRATION_PER_SOURCE = 24
CALIBRATION_WIDTH = 480  # px at height 48; longer crops are cut there (9 % of eval-dev lines are longer)
CALIBRATION_PERCENTILE = 99.99  # MinMax lost 2-4 points on SROIE/IC15 half a; 99.9 clipped too much
REC_HEIGHT = 48
OP_TYPES = ("Conv", "MatMul")


def half_a_lines(eval_dev: Path) -> dict[str, list[Path]]:
    """Half-a crops of eval-dev lines and zh/lines, per source."""
    return half_lines(eval_dev, "a")


def half_lines(eval_dev: Path, part: Literal["a", "b"]) -> dict[str, list[Path]]:
    """One half's crops of eval-dev lines and zh/lines, per source."""
    out: dict[str, list[Path]] = {}
    for labels in (eval_dev / "lines" / "labels.tsv", eval_dev / "zh" / "lines" / "labels.tsv"):
        rows = [line.split("\t") for line in labels.read_text(encoding="utf-8").splitlines() if line.strip()]
        sources = {r[0]: (r[3].split("(")[0] if len(r) > 3 else "unk") for r in rows}
        half = halves.halves(sources)
        for name, source in sources.items():
            if half[name] == part:
                out.setdefault(source, []).append(labels.parent / name)
    return out


def calibration_lines(eval_dev: Path, per_source: int = CALIBRATION_PER_SOURCE, seed: str = SEED,
                      source: str | None = None) -> list[Path]:
    """``per_source`` half-a crops of each source (of ``source`` alone if given), in a fixed hashed order."""
    picked = []
    for name, files in sorted(half_a_lines(eval_dev).items()):
        if source is None or name == source:
            ordered = sorted(files, key=lambda p: hashlib.sha256((seed + p.name).encode()).hexdigest())
            picked += ordered[:per_source]
    if not picked:
        raise ValueError(f"no half-a eval-dev line crops of source {source!r}")
    return picked


def calibration_input(path: Path, min_width: int, width: int = CALIBRATION_WIDTH) -> np.ndarray:
    """The engine's input for one crop, zero-padded (the engine's own padding value) or cut to a
    fixed `width`: the histogram calibrators need every tensor of a kind to share one shape."""
    x = engine_input(path, min_width)
    out = np.zeros((1, 3, REC_HEIGHT, width), np.float32)
    keep = min(width, x.shape[3])
    out[..., :keep] = x[..., :keep]
    return out


def engine_input(path: Path, min_width: int, height: int = REC_HEIGHT, max_width: int = 3072) -> np.ndarray:
    """(1, 3, height, width) as edge_ocr.engine.recognize feeds one crop (resize_for_recognition)."""
    crop = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if crop is None:
        raise ValueError(f"cannot decode {path}")
    h, w = crop.shape[:2]
    width = min(max_width, max(math.ceil(height * w / max(h, 1)), min_width))
    target = min(width, max(1, math.ceil(height * w / max(h, 1))))
    resized = cv2.resize(crop, (target, height), interpolation=cv2.INTER_LINEAR)
    out = np.zeros((1, 3, height, width), np.float32)
    out[0, :, :, :target] = ((resized.astype(np.float32) / np.float32(255.0) - 0.5) / 0.5).transpose(2, 0, 1)
    return out


def tensor_ranges(model_path: Path, inputs: list[np.ndarray], names: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """The (min, max) of each named activation over ``inputs``, run in fp32 by ONNX Runtime."""
    import onnxruntime as ort

    model = onnx.load(model_path)
    del model.graph.output[:]
    model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one reduction order whatever the machine's cores
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    low, high = dict.fromkeys(names, np.inf), dict.fromkeys(names, -np.inf)
    for x in inputs:
        for name, value in zip(names, session.run(list(names), {feed: x})):
            low[name], high[name] = min(low[name], float(value.min())), max(high[name], float(value.max()))
    return {n: (low[n], high[n]) for n in names}


def _scalar(graph: onnx.GraphProto, name: str) -> float | None:
    for init in graph.initializer:
        if init.name == name:
            value = onnx.numpy_helper.to_array(init)
            return float(value.reshape(-1)[0]) if value.size == 1 else None
    return None


def fuse_gelu(model: onnx.ModelProto) -> int:
    """Replace each exact-erf GELU subgraph x/sqrt(2) -> Erf -> +1 -> *x -> *0.5 by one com.microsoft
    Gelu node (the same function). ONNX Runtime fuses this pattern itself in fp32, but not once QDQ
    pairs sit on x (each consumer gets its own DequantizeLinear), and five unfused element-wise ops on
    the backbone's widest tensors then cost more than int8 Conv saves. Returns the number fused."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def only_consumer(tensor: str, op: str) -> onnx.NodeProto | None:
        found = consumers.get(tensor, [])
        return found[0] if len(found) == 1 and found[0].op_type == op else None

    def other(node: onnx.NodeProto, tensor: str) -> str:
        return node.input[1] if node.input[0] == tensor else node.input[0]

    drop, fused = set(), 0
    for erf in [n for n in graph.node if n.op_type == "Erf"]:
        div = producer.get(erf.input[0])
        if div is None or div.op_type != "Div" or abs((_scalar(graph, div.input[1]) or 0) - 2**0.5) > 1e-5:
            continue
        x = div.input[0]
        add = only_consumer(erf.output[0], "Add")
        if add is None or _scalar(graph, other(add, erf.output[0])) != 1.0:
            continue
        mul = only_consumer(add.output[0], "Mul")
        if mul is None or other(mul, add.output[0]) != x:
            continue
        half = only_consumer(mul.output[0], "Mul")
        if half is None or _scalar(graph, other(half, mul.output[0])) != 0.5:
            continue
        if len(consumers.get(div.output[0], [])) != 1:
            continue
        gelu = onnx.helper.make_node("Gelu", [x], [half.output[0]], name=f"Gelu.fused.{fused}", domain="com.microsoft")
        position = list(graph.node).index(half)
        graph.node.insert(position, gelu)
        drop.update(id(n) for n in (div, erf, add, mul, half))
        fused += 1
    keep = [n for n in graph.node if id(n) not in drop]
    del graph.node[:]
    graph.node.extend(keep)
    if fused and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return fused


# Kept fp32, chosen on half a of eval-dev lines (one node quantized at a time,
# ranked by KL(fp32 || int8) of the output distribution; then whole-model accuracy on half a):
# - small: the six most sensitive convolutions: the stem (Conv.0-3: 3x3/2x2 convs and the
#   concat joining the max-pool branch, as in the det stem), the first block's depthwise 3x3
#   (Conv.5) and the last stage's depthwise (Conv.46). Keeping them fp32 costs no time (ORT's fp32
#   NCHWc kernels beat QLinearConv on 3-channel and depthwise inputs here).
#   Plus the three neck convolutions feeding the SVTR mixer (Conv.54-56): with them int8, SROIE
#   half a lost 1.5 points more; they are small (T x 384 -> 120), so fp32 there costs ~1 %.
SMALL_KEPT_FP32 = ("Conv.0", "Conv.1", "Conv.2", "Conv.5", "Conv.46", "Conv.3", "Conv.54", "Conv.55", "Conv.56")

# Activations calibrated on their whole range (MinMax over the calibration crops) instead of the
# percentile: the last GELU before the neck. Its 99.99th percentile (1.24) cut values up to 3.3 that
# occur at 0.02 % of positions and carry the small punctuation: with it clipped the page reader read
# 9 and 15 of 26 enumeration commas (、) on Ming and Kai renders where fp32 reads 22 and 24. Found by
# bypassing each of the 117 activation quantizations in turn (bench/punctuation.py): no other moved
# the commas' margin over the blank by more than a tenth of what this one did.
SMALL_FULL_RANGE = ("p2o.pd_op.gelu.12.0",)

# The plate specialist (PP-OCRv4, rec_zh) reads plate-shaped lines only, so it is calibrated on half-a
# plates alone, padded as the engine pads them (320 px), and its agreement with fp32 is measured on the
# half-b plates. Chosen on half a of eval-dev plates (alnum %, fp32 97.3 / 97.3 on halves a / b, 1 thread):
# - calibrated on 24 crops of every source, everything int8: plates 86.7 / 89.0;
# - the same with stem and depthwise convolutions fp32: 93.6 / 92.8;
# - calibrated on 96 half-a plates, stem and depthwise fp32: 97.7 / 97.3 at 0.64-0.67x fp32's time per plate;
#   everything int8: 95.8 / 96.2 and no faster (0.70x); MinMax instead of percentile: 89.8 / 91.3.
# Depthwise convolutions stay fp32 in any case: ORT's fp32 NCHWc kernels beat QLinearConv on them here.
PLATE_SOURCE = "LPRNet_Pytorch-test-plates"
PLATE_CALIBRATION = 96
V4_KEPT_FP32 = ("p2o.Conv.0", "p2o.Conv.2") + tuple(
    f"p2o.Conv.{i}" for i in (1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 25, 29, 31))  # stem, then every depthwise
