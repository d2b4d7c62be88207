"""The README and docs/ name files of this repository (tests that prove a claim, benchmarks that
produced a table, configs to copy): each must exist, or the reader is sent nowhere."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOP = ("tests", "bench", "docs", "config", "models", "edge_ocr", "systemd", ".ci")
# `path` in backticks, or a Markdown link's target; a path with a placeholder (<...>, *, {...}) is a pattern
_TOP = "|".join(map(re.escape, TOP))
CITED = re.compile(r"`((?:%s)/[\w./-]+)`|\]\(((?:%s)/[\w./-]+)\)" % (_TOP, _TOP))


def cited_paths(text: str) -> set[str]:
    paths = set()
    for match in CITED.finditer(text):
        path = (match.group(1) or match.group(2)).rstrip(".")
        paths.add(path.split("::")[0])
    return paths


def test_cited_paths_are_found_in_a_sentence():
    text = "see `tests/tools/test_evaluate.py`, [the record](docs/memory.md) and `bench/halves.py <run>.json`"
    assert cited_paths(text) == {"tests/tools/test_evaluate.py", "docs/memory.md"}


def test_every_repository_path_the_docs_cite_exists():
    missing = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for path in sorted(cited_paths(doc.read_text(encoding="utf-8"))):
            relative = (doc.parent / path) if doc.parent.name == "docs" and not (REPO / path).exists() else REPO / path
            if not relative.exists():
                missing.append("%s: %s" % (doc.relative_to(REPO), path))
    assert not missing, "\n".join(missing)
