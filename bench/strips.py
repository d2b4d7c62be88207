"""Dev only: detection in strips against the whole image, on eval-dev, in fresh child processes.

Each configuration runs every image of a set in its own child (as one `edge-ocr ocr` process
would, glibc set up by ``allocator.configure``), which reports its peak RSS (ru_maxrss), the CPU
time (user + sys) of the images and the predictions. The parent scores the predictions like
``edge-ocr eval`` per page and prints, per set and half of eval-dev (``bench/halves.py``'s
split by source image): det F1, e2e F1, and the CPU time relative to the first configuration,
which runs interleaved with the others ``--repeat`` times (the machine is shared: read ratios).

    .venv/bin/python bench/strips.py --configs whole,512/64 --threads 1,2 --sets sroie,ic15,zh
    .venv/bin/python bench/strips.py --configs whole,whole+arena,288/64+arena --sets zh --repeat 3

A configuration is ``whole`` (the whole detection input at once) or ``STRIP/OVERLAP``
(``engine.det_strip``, ``det_strip_overlap``), optionally ``+arena`` (the detector's session
with ONNX Runtime's arena and memory patterns on) or ``+shared`` (an env-wide arena that grows
by what is asked, ``session.use_env_allocators``), then optionally ``:low`` for
``engine.memory = "low"``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from halves import halves  # noqa: E402

EVAL_DEV = REPO.parent / "shared" / "eval-dev"
SETS = {"sroie": ("pages/labels.jsonl", "SROIE"), "ic15": ("pages/labels.jsonl", "ICDAR2015"),
        "zh": ("zh/pages/labels.jsonl", "")}


def options_for(config: str, threads: int) -> tuple[dict[str, Any], str]:
    name, _, memory = config.partition(":")
    name, _, arena = name.partition("+")
    opts: dict[str, Any] = {"threads": threads, "verify_checksums": False}
    if name != "whole":
        strip, overlap = (int(p) for p in name.split("/"))
        opts.update(det_strip=strip, det_strip_overlap=overlap)
    opts["det_arena"] = arena
    return opts, memory or "default"


def child(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    from edge_ocr import allocator

    allocator.configure(job["memory"])
    from edge_ocr.engine.ocr import EngineOptions, OcrEngine

    options = dict(job["options"])
    arena = options.pop("det_arena")
    engine = OcrEngine(EngineOptions(**options))
    if arena:  # the detector's session with its arena and memory patterns on, as ORT's defaults are
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = engine.threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if arena == "shared":  # an env-wide arena that grows by what is asked (kSameAsRequested)
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, -1, -1))
            so.add_session_config_entry("session.use_env_allocators", "1")
        assert engine.det is not None
        engine.det.session = ort.InferenceSession(str(engine.det.variant.path), sess_options=so,
                                                  providers=["CPUExecutionProvider"])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    wall0 = time.perf_counter()
    out = []
    for file in job["files"]:
        result = engine(Path(file).read_bytes())
        out.append({"file": Path(file).name, "boxes": [line.box.tolist() for line in result.lines],
                    "texts": [line.text for line in result.lines]})
    usage = resource.getrusage(resource.RUSAGE_SELF)
    engine.close()
    print(json.dumps({"cpu_s": usage.ru_utime + usage.ru_stime - cpu0, "wall_s": time.perf_counter() - wall0,
                      "maxrss_mb": usage.ru_maxrss / 1024, "pages": out}))
    return 0


def run_child(options: dict[str, Any], memory: str, files: list[Path]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"options": options, "memory": memory, "files": [str(f) for f in files]}, handle)
    proc = subprocess.run([sys.executable, __file__, "--child", handle.name], capture_output=True, text=True,
                          check=False)
    Path(handle.name).unlink()
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def load_set(name: str) -> list[dict[str, Any]]:
    manifest, prefix = SETS[name]
    path = EVAL_DEV / manifest
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [dict(r, path=path.parent / r["file"]) for r in records if r["source"].startswith(prefix)]


def score(records: list[dict[str, Any]], pages: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    import numpy as np

    from edge_ocr.tools import scoring

    half = halves({r["file"]: r["source"] for r in records})
    predicted = {p["file"]: p for p in pages}
    totals: dict[str, list[int]] = {}
    for r in records:
        p = predicted[r["file"]]
        match = scoring.match_page(
            tuple(np.asarray(line["box"], dtype=np.float32) for line in r["lines"]),
            tuple(line["text"] for line in r["lines"]), tuple(bool(line.get("ignore")) for line in r["lines"]),
            tuple(np.asarray(b, dtype=np.float32) for b in p["boxes"]), tuple(p["texts"]))
        for key in (half[r["file"]], "all"):
            t = totals.setdefault(key, [0, 0, 0, 0])
            t[0] += match.true_positives
            t[1] += match.detections
            t[2] += match.truths
            t[3] += match.e2e_hits
    out = {}
    for key, (tp, det, truth, e2e) in totals.items():
        out[key] = {"det_f1": 100 * scoring.f1(tp, det, truth)[2], "e2e_f1": 100 * scoring.f1(e2e, det, truth)[2]}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--child")
    ap.add_argument("--configs", default="whole,512/64")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--sets", default="sroie,ic15,zh")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child)
    configs = args.configs.split(",")
    rows = []
    for set_name in args.sets.split(","):
        records = load_set(set_name)
        files = [r["path"] for r in records]
        for threads in [int(t) for t in args.threads.split(",")]:
            runs: dict[str, list[dict[str, Any]]] = {c: [] for c in configs}
            for _ in range(args.repeat):
                for config in configs:
                    options, memory = options_for(config, threads)
                    runs[config].append(run_child(options, memory, files))
            base_cpu = statistics.median(r["cpu_s"] for r in runs[configs[0]])
            for config in configs:
                figures = score(records, runs[config][0]["pages"])
                cpu = statistics.median(r["cpu_s"] for r in runs[config])
                row = {"set": set_name, "threads": threads, "config": config,
                       "maxrss_mb": max(r["maxrss_mb"] for r in runs[config]),
                       "maxrss_runs": [round(r["maxrss_mb"], 1) for r in runs[config]],
                       "cpu_s": round(cpu, 2), "cpu_ratio": round(cpu / base_cpu, 3),
                       "cpu_ratios": [round(r["cpu_s"] / b["cpu_s"], 3) for r, b in zip(runs[config], runs[configs[0]])],
                       **{"%s_%s" % (k, h): round(v, 2) for h, fig in figures.items() for k, v in fig.items()}}
                rows.append(row)
                print("| %s | %d | %s | %.1f %s | %.2f | %.3f %s | %s |" % (
                    set_name, threads, config, row["maxrss_mb"], row["maxrss_runs"], cpu, row["cpu_ratio"],
                    row["cpu_ratios"], " | ".join("%s %s %.2f" % (k, h, v) for h, fig in sorted(figures.items())
                                                  for k, v in fig.items())), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
