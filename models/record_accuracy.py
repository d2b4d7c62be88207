"""File `edge-ocr eval --json` reports in the packs' manifest.json: a build step, run by a
maintainer in the source tree (the installed daemon never writes its manifests).

    .venv/bin/edge-ocr eval ../shared/eval-dev/lines/manifest.jsonl --precision int8 --json /tmp/lines-int8.json
    .venv/bin/python models/record_accuracy.py /tmp/lines-int8.json [more reports...]

Each report lands under accuracy[<eval set>][<precision>] of the pack it ran, as the yardstick
scores it (per source: n and the accuracy fields). Refused: scored predictions of another
engine, a --limit run, and an int8 run of a pack with no int8 variant.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from edge_ocr.engine.manifest import Manifest
from edge_ocr.tools.evaluate import accuracy_record

MODELS_DIR = Path(__file__).resolve().parent


def record(report: dict, models_dir: Path = MODELS_DIR) -> Path:
    """File one report; returns the manifest written. Raises ValueError for a report that cannot be."""
    where = report.get("recorded_as")
    if where is None:
        raise ValueError("not a report of a pack's own run (--predictions scores another engine)")
    if not where["full_run"]:
        raise ValueError("only a full run can be recorded (no --limit)")
    if where["precision"] == "int8" and "int8" not in where["precisions"].values():
        raise ValueError("pack %s has no int8 variant: nothing to record" % where["pack"])
    path = models_dir / where["pack"] / "manifest.json"
    manifest = Manifest.from_json(path.read_text(encoding="utf-8"))
    manifest.accuracy.setdefault(where["eval_set"], {})[where["precision"]] = accuracy_record(report, report["engine"])
    path.write_text(manifest.to_json(), encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="JSON written by `edge-ocr eval --json`")
    args = parser.parse_args(argv)
    failed = 0
    for report in args.reports:
        try:
            path = record(json.loads(report.read_text(encoding="utf-8")))
            print("%s -> %s" % (report, path))
        except (OSError, ValueError, KeyError) as exc:
            print("%s: not recorded: %s" % (report, exc), file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
