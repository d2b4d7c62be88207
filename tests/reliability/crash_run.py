"""``python crash_run.py EVENT NEEDLE N CONFIG``: run ``edge-ocr run -c CONFIG`` and SIGKILL
it at the N-th audit event EVENT (``os.rename`` or ``open``) whose path contains NEEDLE.

Audit hooks run just before the operation, so the kill lands exactly between a temp file's
write and its rename into done/ or the spool, or just before a file is claimed into
.processing/: the moments a crash can hurt. EVENT ``none`` installs no hook (the test kills
from outside at a random moment). Test code: the daemon has no crash hooks of its own."""

from __future__ import annotations

import os
import runpy
import signal
import sys


def main() -> None:
    event, needle, nth, config = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    seen = 0

    def hook(name: str, args: tuple) -> None:
        nonlocal seen
        if name != event:
            return
        path = args[1] if name == "os.rename" else args[0]
        if needle in os.fsdecode(path) if isinstance(path, (str, bytes)) else False:
            seen += 1
            if seen == nth:
                os.kill(os.getpid(), signal.SIGKILL)

    if event != "none":
        sys.addaudithook(hook)
    sys.argv = ["edge-ocr", "run", "-c", config]
    runpy.run_module("edge_ocr", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
