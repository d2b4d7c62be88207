"""Internal entry point of `edge-ocr bench`: measures one configuration in a child process, so
its peak RSS and start-up are its own. The parent (``bench.measure``) writes the job as JSON:

    python -m edge_ocr.tools.bench_worker JOB.json   →   one result JSON on stdout
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edge_ocr.tools.bench import BenchConfig, run_worker


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m edge_ocr.tools.bench_worker JOB.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    config = BenchConfig(**job["config"])
    result = run_worker(config, [Path(p) for p in job["images"]], det=job["det"], warmup=job["warmup"])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
