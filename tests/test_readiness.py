"""edge_ocr.readiness: a 503 from /readyz names what is failing, in the daemon's own terms."""

from __future__ import annotations

from edge_ocr.readiness import Readiness, daemon_readiness

PARTS = dict(model=("ppocrv6-small", "2"), model_loaded=True, pipeline_running=True,
             sources={"inbox": "online", "gate": "online"}, mqtt="spooling", guard={"level": "ok", "rss_mb": 210.0})


def test_a_daemon_with_every_part_up_is_ready_even_while_the_broker_is_down():
    readiness = daemon_readiness(**PARTS)
    assert readiness.ready and readiness.reason == "ready"
    assert readiness.to_json() == {
        "ready": True,
        "model": {"name": "ppocrv6-small", "version": "2", "loaded": True},
        "sources": {"inbox": "online", "gate": "online"},
        "mqtt": "spooling",
        "guard": {"level": "ok", "rss_mb": 210.0},
    }


def test_each_failing_part_is_named():
    readiness = daemon_readiness(**{**PARTS, "model_loaded": False, "sources": {"inbox": "online", "gate": "offline"},
                                    "guard": {"level": "hard"}})
    assert not readiness.ready
    assert readiness.failing == ("model ppocrv6-small 2 not loaded", "source gate offline",
                                 "guard at its hard memory limit (restarting)")
    assert readiness.reason == ("not ready: model ppocrv6-small 2 not loaded; source gate offline; "
                                "guard at its hard memory limit (restarting)")
    assert daemon_readiness(**{**PARTS, "pipeline_running": False}).failing == ("pipeline not running",)
    assert daemon_readiness(**{**PARTS, "guard": {"level": "soft"}}).ready  # degraded, still serving


def test_an_empty_readiness_is_ready():
    assert Readiness().ready and Readiness().to_json() == {"ready": True}
