"""edge_ocr.results: how results and file names are shown."""

from __future__ import annotations

from edge_ocr.results import log_name, printable_name


def test_a_name_in_the_journal_cannot_start_a_line():
    assert log_name("fake\nedge_ocr: file done.jpg") == "fake\\x0aedge_ocr: file done.jpg"
    assert log_name("收据 2026.jpg") == "收据 2026.jpg"


def test_a_name_that_is_not_utf8_is_carried_as_text():
    assert printable_name(b"scan\xff.jpg".decode("utf-8", "surrogateescape")) == "scan\\xff.jpg"
