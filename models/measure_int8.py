"""Measure int8 candidates of an OCR model against its fp32 original: speed and output agreement.

Used by build.py (shared preprocessing, calibration image lists, agreement gates) and runnable by itself:

    python models/measure_int8.py det models/ppocrv6-small/det.fp32.onnx CANDIDATE.onnx [...]
    python models/measure_int8.py rec models/crnn/rec.fp32.onnx CANDIDATE.onnx --height 32

Each run prints one JSON object per candidate. Timing uses one ONNX Runtime session per model with
intra_op_num_threads=1 and the memory arena off, and reports the median wall time over `runs` calls:
det on a 960x736 page tensor and a 640x480 frame tensor, rec on a batch of 8 line crops of HEIGHTx320.
Agreement, det: mean absolute difference of the probability maps and IoU of the maps binarized at 0.3,
over the calibration pages plus 10 other pages. Agreement, rec: fraction of time steps whose argmax
matches fp32 and fraction of crops whose greedy CTC decode (drop repeats, then blank 0) matches exactly,
over 100 line crops that are not among the calibration crops.

Images come from eval-dev (default: ../shared/eval-dev beside the repo; override with --eval-dev).
Imports numpy, opencv and onnxruntime only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

DEFAULT_EVAL_DEV = Path(__file__).resolve().parents[2] / "shared" / "eval-dev"

DET_MEAN = (0.485, 0.456, 0.406)
DET_STD = (0.229, 0.224, 0.225)
DET_MAX_SIDE = 960
DET_MULTIPLE = 32
DET_BINARY_THRESHOLD = 0.3
DET_PAGE_SIZE = (960, 736)  # width, height of the timing "page" tensor
DET_FRAME_SIZE = (640, 480)  # width, height of the timing "frame" tensor

REC_MAX_WIDTH = 320
REC_TIMING_BATCH = 8

CALIBRATION_PAGES = 16
EXTRA_AGREEMENT_PAGES = 10
CALIBRATION_LINES = 64
AGREEMENT_LINES = 100

# Gates for shipping an int8 variant (see build.py).
MIN_REC_STRING_MATCH = 0.98
MIN_DET_BINARY_IOU = 0.95

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})


# ---------------------------------------------------------------- image lists


def _images(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images in {folder}")
    return files


def _spread(files: Sequence[Path], count: int) -> list[Path]:
    """`count` files evenly spaced over the name-sorted list, so every source in eval-dev is represented."""
    if count >= len(files):
        return list(files)
    step = len(files) / count
    return [files[int(i * step)] for i in range(count)]


def calibration_pages(eval_dev: Path) -> list[Path]:
    """The fixed, name-sorted list of pages used to calibrate det models."""
    return _spread(_images(eval_dev / "pages"), CALIBRATION_PAGES)


def agreement_pages(eval_dev: Path) -> list[Path]:
    """Calibration pages plus EXTRA_AGREEMENT_PAGES others, for det agreement."""
    calibration = calibration_pages(eval_dev)
    others = [p for p in _images(eval_dev / "pages") if p not in calibration]
    return calibration + _spread(others, EXTRA_AGREEMENT_PAGES)


def calibration_lines(eval_dev: Path) -> list[Path]:
    """The fixed, name-sorted list of line crops used to calibrate rec models."""
    return _spread(_images(eval_dev / "lines"), CALIBRATION_LINES)


def agreement_lines(eval_dev: Path) -> list[Path]:
    """AGREEMENT_LINES line crops disjoint from the calibration crops."""
    calibration = set(calibration_lines(eval_dev))
    others = [p for p in _images(eval_dev / "lines") if p not in calibration]
    return _spread(others, AGREEMENT_LINES)


def read_bgr(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot decode {path}")
    return image


# ---------------------------------------------------------------- preprocessing


def det_size(height: int, width: int, max_side: int = DET_MAX_SIDE) -> tuple[int, int]:
    """(height, width) after scaling the longer side to `max_side`, each rounded to a multiple of 32."""
    scale = max_side / max(height, width)
    out_h = max(DET_MULTIPLE, round(height * scale / DET_MULTIPLE) * DET_MULTIPLE)
    out_w = max(DET_MULTIPLE, round(width * scale / DET_MULTIPLE) * DET_MULTIPLE)
    return out_h, out_w


def det_tensor(image_bgr: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """BGR uint8 HxWx3 -> float32 1x3xH'xW', ImageNet-normalized.

    `size` is (width, height); default: longer side 960, both sides multiples of 32.
    """
    if size is None:
        out_h, out_w = det_size(*image_bgr.shape[:2])
    else:
        out_w, out_h = size
    resized = cv2.resize(image_bgr, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
    mean, std = np.array(DET_MEAN, np.float32), np.array(DET_STD, np.float32)
    x: np.ndarray = (resized.astype(np.float32) / np.float32(255.0) - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def rec_tensor(image_bgr: np.ndarray, height: int, max_width: int = REC_MAX_WIDTH) -> np.ndarray:
    """BGR uint8 crop -> float32 3 x height x max_width.

    Aspect kept, width capped at max_width, normalized to [-1, 1], then zero-padded on the right.
    """
    h, w = image_bgr.shape[:2]
    width = min(max_width, max(1, int(np.ceil(height * w / h))))
    resized = cv2.resize(image_bgr, (width, height), interpolation=cv2.INTER_LINEAR)
    x = (resized.astype(np.float32) / 255.0 - 0.5) / 0.5
    out = np.zeros((3, height, max_width), np.float32)
    out[:, :, :width] = x.transpose(2, 0, 1)
    return out


def rec_batches(files: Sequence[Path], height: int, batch: int = REC_TIMING_BATCH) -> list[np.ndarray]:
    crops = [rec_tensor(read_bgr(p), height) for p in files]
    return [np.stack(crops[i : i + batch]) for i in range(0, len(crops), batch)]


# ---------------------------------------------------------------- sessions and timing


def open_session(model: Path | bytes, exact_sums: bool = True) -> ort.InferenceSession:
    """A single-threaded CPU session without the memory arena, as the engine runs on a small board;
    ``exact_sums=False`` leaves x86 CPUs without VNNI their saturating int16 pair sums
    (saturating_convs.py compares the two)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 3
    # Exact int8 sums on x86 CPUs without VNNI, as VNNI and ARM CPUs sum: the gates measure the model,
    # not one CPU's int16 overflow.
    if exact_sums:
        options.add_session_config_entry("session.x64quantprecision", "1")
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def run(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.asarray(session.run(None, {name: x})[0])


def paired_median_ms(
    reference: ort.InferenceSession, candidate: ort.InferenceSession, x: np.ndarray, runs: int = 20, warmup: int = 2
) -> tuple[float, float]:
    """Median wall ms of `reference` and `candidate` on `x`, calls alternating so that load from other
    processes on the machine falls on both alike."""
    for _ in range(warmup):
        run(reference, x)
        run(candidate, x)
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        for session, bucket in ((reference, times[0]), (candidate, times[1])):
            start = time.perf_counter()
            run(session, x)
            bucket.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times[0]), statistics.median(times[1])


# ---------------------------------------------------------------- agreement


def ctc_greedy(probs: np.ndarray) -> list[tuple[int, ...]]:
    """N x T x C scores -> per row the class ids after dropping repeats, then blank (0)."""
    best = probs.argmax(axis=2)
    out = []
    for row in best:
        keep = np.ones(len(row), bool)
        keep[1:] = row[1:] != row[:-1]
        keep &= row != 0
        out.append(tuple(int(c) for c in row[keep]))
    return out


@dataclass(frozen=True, slots=True)
class RecAgreement:
    step_argmax_match: float
    string_match: float
    crops: int
    time_steps: int


@dataclass(frozen=True, slots=True)
class DetAgreement:
    binary_iou_mean: float
    binary_iou_min: float
    prob_mean_abs_diff: float
    pages: int


def rec_agreement(
    reference: ort.InferenceSession, candidate: ort.InferenceSession, batches: Sequence[np.ndarray]
) -> RecAgreement:
    steps = matched_steps = crops = matched_crops = 0
    time_steps = 0
    for x in batches:
        ref, cand = run(reference, x), run(candidate, x)
        time_steps = ref.shape[1]
        matched_steps += int((ref.argmax(2) == cand.argmax(2)).sum())
        steps += ref.shape[0] * ref.shape[1]
        matched_crops += sum(a == b for a, b in zip(ctc_greedy(ref), ctc_greedy(cand), strict=True))
        crops += ref.shape[0]
    return RecAgreement(matched_steps / steps, matched_crops / crops, crops, time_steps)


def det_agreement(
    reference: ort.InferenceSession, candidate: ort.InferenceSession, tensors: Sequence[np.ndarray]
) -> DetAgreement:
    ious, diffs = [], []
    for x in tensors:
        ref, cand = run(reference, x), run(candidate, x)
        diffs.append(float(np.abs(ref - cand).mean()))
        a, b = ref > DET_BINARY_THRESHOLD, cand > DET_BINARY_THRESHOLD
        union = int((a | b).sum())
        ious.append(1.0 if union == 0 else int((a & b).sum()) / union)
    return DetAgreement(float(np.mean(ious)), float(np.min(ious)), float(np.mean(diffs)), len(tensors))


# ---------------------------------------------------------------- whole measurements


@dataclass(frozen=True, slots=True)
class Timing:
    """Median wall ms per timing input ("page" and "frame" for det, "batch8" for rec)."""

    fp32_ms: dict[str, float]
    candidate_ms: dict[str, float]

    def ratios(self) -> dict[str, float]:
        return {k: self.candidate_ms[k] / self.fp32_ms[k] for k in self.fp32_ms}


class Bench:
    """Fixed inputs for one model kind, loaded once, and the fp32 reference session to compare against."""

    def __init__(
        self, kind: str, fp32: Path, height: int = 48, eval_dev: Path = DEFAULT_EVAL_DEV, runs: int = 20,
        lines: Sequence[Path] | None = None,
    ) -> None:
        """kind: "det" or "rec"; height: rec input height (48, or 32 for crnn); lines: the rec agreement
        crops (default: AGREEMENT_LINES of eval-dev lines)."""
        self.kind = kind
        self.runs = runs
        self.reference = open_session(fp32)
        if kind == "det":
            pages = agreement_pages(eval_dev)
            sample = read_bgr(pages[0])
            self.timing_inputs = {
                "page": det_tensor(sample, DET_PAGE_SIZE),
                "frame": det_tensor(sample, DET_FRAME_SIZE),
            }
            self.agreement_inputs = [det_tensor(read_bgr(p)) for p in pages]
        elif kind == "rec":
            lines = agreement_lines(eval_dev) if lines is None else lines
            self.agreement_inputs = rec_batches(lines, height)
            self.timing_inputs = {"batch8": self.agreement_inputs[0]}
        else:
            raise ValueError(f"kind must be det or rec, got {kind!r}")

    def timing(self, candidate: Path) -> Timing:
        session = open_session(candidate)
        fp32_ms, candidate_ms = {}, {}
        for key, x in self.timing_inputs.items():
            fp32_ms[key], candidate_ms[key] = paired_median_ms(self.reference, session, x, self.runs)
        return Timing(fp32_ms, candidate_ms)

    def agreement(self, candidate: Path) -> DetAgreement | RecAgreement:
        session = open_session(candidate)
        if self.kind == "det":
            return det_agreement(self.reference, session, self.agreement_inputs)
        return rec_agreement(self.reference, session, self.agreement_inputs)


def passes(agreement: DetAgreement | RecAgreement, min_string_match: float | None = None) -> bool:
    """The agreement gate an int8 variant must pass to ship (a recipe may set its own string match)."""
    if isinstance(agreement, DetAgreement):
        return agreement.binary_iou_mean >= MIN_DET_BINARY_IOU
    return agreement.string_match >= (MIN_REC_STRING_MATCH if min_string_match is None else min_string_match)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("det", "rec"))
    parser.add_argument("fp32", type=Path)
    parser.add_argument("candidates", type=Path, nargs="+")
    parser.add_argument("--height", type=int, default=48, help="rec input height (48, or 32 for crnn)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--eval-dev", type=Path, default=DEFAULT_EVAL_DEV)
    args = parser.parse_args(argv)

    bench = Bench(args.kind, args.fp32, args.height, args.eval_dev, args.runs)
    for candidate in _candidates(args.candidates):
        timing, agreement = bench.timing(candidate), bench.agreement(candidate)
        report = {
            "candidate": str(candidate),
            "fp32_ms": _rounded(timing.fp32_ms),
            "candidate_ms": _rounded(timing.candidate_ms),
            "ratio": _rounded(timing.ratios()),
            "agreement": _rounded(asdict(agreement)),
            "passes_agreement_gate": passes(agreement),
        }
        print(json.dumps(report), flush=True)
    return 0


def _candidates(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"no such model: {path}")
        yield path


def _rounded(values: dict[str, float | int]) -> dict[str, float | int]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()}


if __name__ == "__main__":
    sys.exit(main())
