"""Readiness: whether the daemon is doing its job, which parts are not, and each part's state.

One typed value for GET /readyz, built by the daemon and by the API's tests alike, so the
reason a 503 gives is always the failing parts' names. Imports nothing from edge_ocr.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Readiness:
    """``failing`` names each part that is not ready ("model", "source inbox", "guard"), with a
    short why; ``details`` is every part's state, as GET /readyz shows it."""

    failing: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return not self.failing

    @property
    def reason(self) -> str:
        return "not ready: " + "; ".join(self.failing) if self.failing else "ready"

    def to_json(self) -> dict[str, Any]:
        return {"ready": self.ready, **self.details}


def daemon_readiness(
    model: tuple[str, str],
    model_loaded: bool,
    pipeline_running: bool,
    sources: Mapping[str, str],
    mqtt: str,
    guard: Mapping[str, Any],
) -> Readiness:
    """The daemon's readiness from its parts' states.

    Not ready while the model is not loaded or the pipeline not running, while a source is
    offline (a camera that cannot be opened, a folder that cannot be read), or at the memory
    guard's hard level (it is about to restart). A broker that is down is not a failure: results
    wait in the spool (``mqtt`` is "spooling").
    """
    name, version = model
    failing = []
    if not model_loaded:
        failing.append("model %s %s not loaded" % (name, version))
    if not pipeline_running:
        failing.append("pipeline not running")
    failing.extend("source %s %s" % (source, status) for source, status in sorted(sources.items()) if status != "online")
    if guard.get("level") == "hard":
        failing.append("guard at its hard memory limit (restarting)")
    details = {
        "model": {"name": name, "version": version, "loaded": model_loaded},
        "sources": dict(sources),
        "mqtt": mqtt,
        "guard": dict(guard),
    }
    return Readiness(tuple(failing), details)
