"""The reliability suite: faults, bad input, resources, soak. Every test here is marked
``reliability`` (and so ``slow``: the quick loop leaves it out; CI runs it) and files one row
of counts with the ``report`` fixture. The rows are printed at the end of the run and written
as a markdown table to ``$EDGE_OCR_RELIABILITY_REPORT`` when set (the README's table)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

COLUMNS = ("scenario", "runs", "inputs", "lost", "duplicated", "errors as documented")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/reliability/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.reliability)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def reliability_rows() -> list[dict]:
    return []


@pytest.fixture
def report(reliability_rows, request):
    """``report(scenario, runs=, inputs=, lost=, duplicated=, errors=)``: one row of the table."""

    def add(scenario: str, **counts: object) -> None:
        reliability_rows.append({"scenario": scenario, **counts})
        request.config._edge_ocr_rows = reliability_rows  # read back by the terminal summary

    return add


def pytest_terminal_summary(terminalreporter, config) -> None:
    rows = getattr(config, "_edge_ocr_rows", None)
    if not rows:
        return
    lines = ["| %s |" % " | ".join(COLUMNS), "|" + "---|" * len(COLUMNS)]
    lines += ["| %s |" % " | ".join(str(row.get(c.split()[0], "")) for c in COLUMNS) for row in rows]
    table = "\n".join(lines) + "\n"
    terminalreporter.write_sep("-", "reliability")
    terminalreporter.write(table)
    target = os.environ.get("EDGE_OCR_RELIABILITY_REPORT")
    if target:
        Path(target).write_text(table, encoding="utf-8")
