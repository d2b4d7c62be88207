"""edge_ocr.progress: a progress line on a terminal, nothing anywhere else."""

from __future__ import annotations

import io

from edge_ocr.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_line_says_done_rate_and_time_left():
    progress = Progress(200, "images", stream=Terminal())
    progress.done = 12
    assert progress.line(elapsed_s=4.0) == "12/200 images · 3.0/s · 63 s left"
    progress.done = 200
    assert progress.line(elapsed_s=125.0) == "200/200 images · 1.6/s · 2 min 05 s"


def test_it_draws_in_place_on_a_terminal_and_clears_at_the_end():
    terminal = Terminal()
    progress = Progress(3, stream=terminal, min_interval_s=0.0)
    for _ in range(3):
        progress.step()
    progress.close()
    drawn = terminal.getvalue()
    assert drawn.count("\r\x1b[K") == 4 and "3/3 files" in drawn and drawn.endswith("\r\x1b[K")


def test_nothing_is_written_to_a_pipe_or_a_log():
    pipe = io.StringIO()
    progress = Progress(5, stream=pipe, min_interval_s=0.0)
    progress.step()
    progress.close()
    assert pipe.getvalue() == ""
