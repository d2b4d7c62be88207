"""edge_ocr.sinks.files: results stored beside their originals under free names, on real
directories (and across filesystems: /dev/shm is a tmpfs here)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path

import pytest

from edge_ocr.errors import SinkError
from edge_ocr.sinks.files import ResultFiles, move


def test_files_of_one_name_stored_at_once_each_get_their_own_name(tmp_path):
    """A scanner that always writes scan.jpg, two results finishing together (pipeline.workers > 1,
    or a refusal to failed/ beside a result): before, both took the first free name, one JSON
    overwrote or tore the other and an original was lost."""
    inbox, done = tmp_path / "inbox", tmp_path / "done"
    inbox.mkdir()
    files, count = ResultFiles(), 16
    start = threading.Barrier(count)

    def store(i: int) -> None:
        src = inbox / ("scan-%d.txt" % i)
        src.write_text("page %d" % i)
        start.wait()
        files.store(src, done, "scan.txt", ".json", {"text": "page %d" % i}, "%064x" % i)

    threads = [threading.Thread(target=store, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    stored = sorted(p.name for p in done.iterdir())
    assert len(stored) == 2 * count and not any(p.name.startswith(".") for p in done.iterdir())
    for meta in done.glob("*.json"):  # each JSON whole, and beside its own original
        assert json.loads(meta.read_text())["text"] == meta.with_suffix(".txt").read_text()


@pytest.fixture
def other_fs():
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(tempfile.gettempdir()).st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the temp dir")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as directory:
        yield Path(directory)


def test_a_symlink_moved_to_another_filesystem_stays_a_link_and_its_target_is_never_opened(tmp_path, other_fs):
    for name, target in (("dangling.jpg", tmp_path / "nowhere"), ("todir.jpg", tmp_path)):
        src = tmp_path / name
        src.symlink_to(target)
        move(src, other_fs / name)
        assert not os.path.lexists(src) and os.readlink(other_fs / name) == str(target)


def test_a_move_that_fails_leaves_no_result_without_its_original(tmp_path, other_fs):
    """Before, each failed attempt (a full disk, an unreadable original) left its JSON behind and the
    next took a new name: failed/ filled with orphan NAME-N.error.json files, one per retry."""
    src = tmp_path / "big.jpg"
    src.mkdir()  # cannot be copied across filesystems (as a file too big for the disk cannot)
    files = ResultFiles()
    for _ in range(3):
        with pytest.raises(SinkError, match="cannot copy"):
            files.store(src, other_fs, "big.jpg", ".error.json", {"error": "too big"}, None)
    assert list(other_fs.iterdir()) == []


def test_a_failed_move_keeps_the_result_an_interrupted_earlier_attempt_wrote(tmp_path, other_fs):
    """A crash left the JSON written and the original not yet moved; the restart's move fails
    (a full disk). That JSON must stay: it is what the next retry finishes with, without a second
    OCR run."""
    (tmp_path / "x.txt").mkdir()  # cannot be copied across filesystems
    sha = "%064x" % 7
    earlier = other_fs / "x.json"
    earlier.write_text(json.dumps({"file": "x.txt", "sha256": sha, "text": "x"}))
    files = ResultFiles()
    with pytest.raises(SinkError, match="cannot copy"):
        files.store(tmp_path / "x.txt", other_fs, "x.txt", ".json", {"file": "x.txt", "sha256": sha}, sha)
    assert files.existing(other_fs, "x.txt", ".json", sha) == earlier


def test_thousands_of_files_of_one_name_each_get_a_name_found_in_a_few_looks(tmp_path, monkeypatch):
    """A camera automation writing snapshot.jpg once a minute: named -1, -2, ... to the end, the
    10,000th read every earlier JSON to find its name (0.6 s) and the 10,001st found none, which
    stopped the folder. Past -9 a name comes from the content's sha256."""
    import edge_ocr.sinks.files as files_module

    inbox, done = tmp_path / "inbox", tmp_path / "done"
    inbox.mkdir()
    reads, real_read = [], files_module.read_json
    monkeypatch.setattr(files_module, "read_json", lambda path: reads.append(path) or real_read(path))
    files = ResultFiles()
    sha = [hashlib.sha256(b"frame %d" % i).hexdigest() for i in range(60)]
    for i in range(60):
        src = inbox / "snapshot.jpg"
        src.write_text("frame %d" % i)
        reads.clear()
        files.store(src, done, "snapshot.jpg", ".json", {"text": "frame %d" % i, "sha256": sha[i]}, sha[i])
        assert len(reads) <= 10, (i, len(reads))  # NAME and NAME-1 ... NAME-9 taken: at most those looked at
    stems = {p.stem for p in done.glob("*.json")}
    assert stems == {"snapshot"} | {"snapshot-%d" % n for n in range(1, 10)} | {
        "snapshot-" + sha[i][:12] for i in range(10, 60)}
    for meta in done.glob("*.json"):  # each beside its own original
        assert json.loads(meta.read_text())["text"] == meta.with_suffix(".jpg").read_text()
    # The same bytes again find their own JSON (an interrupted move finished, no second name).
    src = inbox / "snapshot.jpg"
    src.write_text("frame 59")
    own = done / ("snapshot-%s.json" % sha[59][:12])
    assert files.existing(done, "snapshot.jpg", ".json", sha[59]) == own
    assert files.store(src, done, "snapshot.jpg", ".json", {"text": "frame 59", "sha256": sha[59]}, sha[59]) == own
    assert len(list(done.glob("*.json"))) == 60
