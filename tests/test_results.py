"""edge_ocr.results: how results and file names are shown."""

from __future__ import annotations

from edge_ocr.results import log_name, printable_name


def test_a_name_in_the_journal_cannot_start_a_line():
    assert log_name("fake\nedge_ocr: file done.jpg") == "fake\\x0aedge_ocr: file done.jpg"
    assert log_name("收据 2026.jpg") == "收据 2026.jpg"


def test_a_name_that_is_not_utf8_is_carried_as_text():
    assert printable_name(b"scan\xff.jpg".decode("utf-8", "surrogateescape")) == "scan\\xff.jpg"


def test_timing_has_the_five_stages_of_the_spec_whatever_ran():
    from edge_ocr.engine.types import EngineOutput
    from edge_ocr.results import Result, Status

    regions_read = EngineOutput((), (640, 480), {"recognize": 12.5, "total": 13.0})  # no detection
    timing = Result("meter", Status.OK, regions_read, timing_ms={"capture": 4.0}).to_dict()["timing_ms"]
    assert timing == {"capture": 4.0, "preprocess": 0.0, "detect": 0.0, "recognize": 12.5, "total": 13.0}
    page = EngineOutput((), (640, 480), {"decode": 2.0, "preprocess": 3.0, "detect": 40.0, "recognize": 9.0,
                                         "total": 54.0})
    timing = Result("inbox", Status.OK, page).to_dict()["timing_ms"]
    assert list(timing)[:5] == ["capture", "preprocess", "detect", "recognize", "total"] and timing["decode"] == 2.0
    assert Result("inbox", Status.ERROR).to_dict()["timing_ms"]["detect"] == 0.0  # an image that never decoded
