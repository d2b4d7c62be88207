"""``edge-ocr check``: what would stop the daemon from working, found before it starts: the
model pack's files, the folders it writes, the cameras, the broker, and memory limits the machine
cannot give. One line per problem.
(A bad config raises ConfigError before any of this.)"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from edge_ocr.config import CameraSourceConfig, Config
from edge_ocr.errors import EdgeOcrError
from edge_ocr.fit import check_fit
from edge_ocr.sinks.mqtt import probe
from edge_ocr.sources.camera import probe as probe_camera


def check(config: Config, broker_timeout_s: float = 5.0) -> list[str]:
    """Problems with models, folders, the broker and the guard's limits, one line each (config errors raise before this)."""
    from edge_ocr.engine.models import load_pack, verify_pack

    problems: list[str] = []
    try:
        problems += ["model: %s" % p for p in verify_pack(load_pack(config.engine.pack))]
    except EdgeOcrError as exc:
        problems.append("model: %s" % exc.message)
    for i, src in enumerate(config.sources):
        if isinstance(src, CameraSourceConfig):
            problem = probe_camera(src)
            if problem:
                problems.append("sources[%d] %s: %s" % (i, src.name, problem))
            continue
        for key in ("path", "done_dir", "failed_dir"):
            problem = _dir_problem(getattr(src, key))
            if problem:
                problems.append("sources[%d].%s: %s" % (i, key, problem))
    if config.mqtt.enabled:
        problem = _dir_problem(config.mqtt.spool_dir)
        if problem:
            problems.append("mqtt.spool_dir: %s" % problem)
        try:
            problem = probe(config.mqtt, broker_timeout_s)
        except EdgeOcrError as exc:
            problem = exc.message
        if problem:
            problems.append("mqtt: %s" % problem)
    unfit = check_fit(config.guard)
    if unfit:
        problems.append("guard: %s" % unfit.message())
    return problems


def _dir_problem(directory: Path) -> str | None:
    """Why the daemon could not use ``directory`` (created on start if missing), or None.

    Writability is tried, not asked of ``os.access``: as root (``sudo edge-ocr check``) that says
    yes to /proc and to read-only mounts, where the daemon then fails to start its source."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return "%s cannot be created: %s is not a directory" % (directory, existing)
    try:
        tempfile.TemporaryDirectory(dir=existing, prefix=".edge-ocr-check-").cleanup()
    except OSError as exc:
        where = "" if existing == directory else " does not exist and %s" % existing
        return "%s%s is not writable by uid %d (%s)" % (directory, where, os.geteuid(), exc.strerror or exc)
    return None
    parent = directory.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        return "%s does not exist and %s is not writable by uid %d" % (directory, parent, os.geteuid())
    return None
