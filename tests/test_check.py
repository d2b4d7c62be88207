"""edge_ocr.check's folder test: what the daemon could not use is named, as root too (the README
runs `sudo edge-ocr check`), where os.access says yes to everything."""

from __future__ import annotations

from pathlib import Path

from edge_ocr.check import _dir_problem


def test_a_folder_that_can_be_made_is_fine_and_the_try_leaves_nothing(tmp_path):
    assert _dir_problem(tmp_path / "inbox" / "deeper") is None
    assert _dir_problem(tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_a_folder_under_a_file_is_named_with_the_file(tmp_path):
    (tmp_path / "hostname").write_text("box")
    assert _dir_problem(tmp_path / "hostname" / "inbox") == (
        "%s cannot be created: %s is not a directory" % (tmp_path / "hostname" / "inbox", tmp_path / "hostname"))


def test_a_folder_where_nothing_can_be_written_is_named_even_for_root():
    problem = _dir_problem(Path("/proc/edge-ocr-inbox"))  # /proc takes no new entries, not even from root
    assert problem is not None and problem.startswith("/proc/edge-ocr-inbox does not exist and /proc is not writable")
