"""Imports point inward (STYLE.md §1): each module may import only the edge_ocr modules
its layer allows. Parses every module's imports with ast; fails on an upward or sideways one."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edge_ocr"

LEAVES = ("edge_ocr.errors", "edge_ocr.results", "edge_ocr.config", "edge_ocr.engine.types", "edge_ocr.stats",
          "edge_ocr.readiness", "edge_ocr.atomic", "edge_ocr.imageformat", "edge_ocr.allocator",
          "edge_ocr.mqtt_client", "edge_ocr.access", "edge_ocr.sandbox", "edge_ocr.listen")

# module prefix → edge_ocr modules it may import (a prefix allows everything below it)
ALLOWED: dict[str, tuple[str, ...]] = {
    "edge_ocr.errors": (),
    "edge_ocr.engine.types": (),
    "edge_ocr.engine": ("edge_ocr.engine", "edge_ocr.errors", "edge_ocr.imageformat"),
    "edge_ocr.results": ("edge_ocr.engine.types", "edge_ocr.errors"),
    "edge_ocr.config": ("edge_ocr.errors", "edge_ocr.engine.types"),
    "edge_ocr.stats": ("edge_ocr.errors",),
    "edge_ocr.readiness": (),
    "edge_ocr.atomic": (),
    "edge_ocr.imageformat": (),
    "edge_ocr.allocator": (),
    "edge_ocr.sandbox": (),
    "edge_ocr.listen": (),
    "edge_ocr.access": ("edge_ocr.sandbox",),
    "edge_ocr.mqtt_client": ("edge_ocr.config", "edge_ocr.errors"),
    "edge_ocr.notify": ("edge_ocr.errors",),
    "edge_ocr.cache": ("edge_ocr.engine.types",),
    "edge_ocr.guard": ("edge_ocr.config", "edge_ocr.stats", "edge_ocr.errors"),
    "edge_ocr.fit": ("edge_ocr.config", "edge_ocr.stats"),
    "edge_ocr.tuning": ("edge_ocr.engine", "edge_ocr.errors", "edge_ocr.atomic"),
    "edge_ocr.tools": ("edge_ocr.tools", "edge_ocr.engine", "edge_ocr.errors", "edge_ocr.tuning", "edge_ocr.allocator"),
    "edge_ocr.sources": ("edge_ocr.sources",) + LEAVES,
    "edge_ocr.sinks": ("edge_ocr.sinks",) + LEAVES,
    "edge_ocr.api": ("edge_ocr.api",) + LEAVES,
    "edge_ocr.pipeline": ("edge_ocr.engine",) + LEAVES,
    "edge_ocr.app": (
        "edge_ocr.pipeline",
        "edge_ocr.sources",
        "edge_ocr.sinks",
        "edge_ocr.api",
        "edge_ocr.guard",
        "edge_ocr.fit",
        "edge_ocr.notify",
        "edge_ocr.engine",
        "edge_ocr.tuning",
        "edge_ocr.cache",
    )
    + LEAVES,
    "edge_ocr.check": ("edge_ocr.engine", "edge_ocr.sinks", "edge_ocr.sources", "edge_ocr.fit") + LEAVES,
    "edge_ocr.submit": LEAVES,
    "edge_ocr.fleet_status": LEAVES,
    "edge_ocr.cli": ("edge_ocr",),
    "edge_ocr.__main__": ("edge_ocr.cli",),
    "edge_ocr": (),  # edge_ocr/__init__.py
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str) -> set[str]:
    """The edge_ocr modules ``module`` (at ``path``) imports, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            source = ".".join(part for part in (base, node.module or "") if part)
            found.add(source)
            found.update("%s.%s" % (source, alias.name) for alias in node.names)
    return {name for name in found if name == "edge_ocr" or name.startswith("edge_ocr.")}


def _rule(module: str) -> tuple[str, tuple[str, ...]]:
    matches = [prefix for prefix in ALLOWED if module == prefix or module.startswith(prefix + ".")]
    prefix = max(matches, key=len)
    return prefix, ALLOWED[prefix]


def _allowed(name: str, allowed: tuple[str, ...]) -> bool:
    # "from edge_ocr.engine import detect" yields both edge_ocr.engine and edge_ocr.engine.detect.
    return any(name == a or name.startswith(a + ".") or a.startswith(name + ".") for a in allowed)


def test_every_import_points_inward():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        prefix, allowed = _rule(module)
        for name in sorted(_imports(path, module)):
            if name == "edge_ocr" and module == "edge_ocr.cli":
                continue
            if not _allowed(name, allowed + (module, "edge_ocr.__version__")):
                problems.append("%s imports %s (allowed under %s: %s)" % (module, name, prefix, ", ".join(allowed) or "nothing"))
    assert not problems, "\n".join(problems)


def test_the_checker_catches_a_sideways_import(tmp_path):
    prefix, allowed = _rule("edge_ocr.api.routes")
    assert prefix == "edge_ocr.api"
    assert not _allowed("edge_ocr.engine.ocr", allowed)
    assert _allowed("edge_ocr.engine.types", allowed)
    routes = tmp_path / "routes.py"  # relative imports are resolved, not skipped
    routes.write_text("from ..engine.ocr import OcrEngine\nfrom . import responses\nfrom .backend import Backend\n")
    assert _imports(routes, "edge_ocr.api.routes") >= {"edge_ocr.engine.ocr", "edge_ocr.api.responses",
                                                       "edge_ocr.api.backend"}


def test_the_daemon_never_imports_the_measuring_tools():
    import subprocess
    import sys

    code = ("import sys, edge_ocr.app, edge_ocr.cli; "
            "print(sorted(m for m in sys.modules if m.startswith('edge_ocr.tools')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
