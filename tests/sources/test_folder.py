"""edge_ocr.sources.folder: the drop-folder lifecycle on real directories, with a real pipeline
and a fake engine (tests/fakes.py)."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import struct
import threading
import time

import pytest

from edge_ocr.config import FolderSourceConfig
from edge_ocr.pipeline import Pipeline
from edge_ocr.sinks.files import ResultFiles
from edge_ocr.sources.folder import FolderSource, ignored, jpeg_ends, looks_complete, prune_least_recent
from edge_ocr.stats import Stats
from tests.broker import wait_until
from tests.fakes import FakeEngine


@pytest.fixture
def folder(tmp_path):
    running = []

    def start(watch="auto", model=("fake", "1"), reading="fake 1", done=None, **kw):
        cfg = FolderSourceConfig("inbox", tmp_path / "inbox", done or tmp_path / "done", tmp_path / "failed",
                                 watch=watch, **{"poll_interval": 0.1, "stability_delay": 0.05, **kw})
        stop, engine, stats = threading.Event(), FakeEngine(), Stats()
        pipe = Pipeline(engine, model, [], stats, stop, queue_size=2)
        source = FolderSource(cfg, pipe.submit, ResultFiles(), stats, reading=reading)
        thread = threading.Thread(target=source.run, args=(stop,), name="source:inbox")
        pipe.start()
        thread.start()
        assert source.ready.wait(10)
        running.append((stop, thread, pipe))
        return source, engine

    start.running = running  # type: ignore[attr-defined]  # for a test that stops the source itself
    yield start
    for stop, thread, pipe in running:
        stop.set()
        thread.join(5)
        pipe.join(5)


def names(path):
    return sorted(p.name for p in path.iterdir() if not p.name.startswith(".")) if path.exists() else []


@pytest.mark.parametrize("watch", ["inotify", "poll"])
def test_lifecycle_done_failed_ignored_and_symlinks(tmp_path, folder, watch):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "early.txt").write_bytes(b"TEXT:present at start")
    source, engine = folder(watch, rescan_interval=0.5)
    assert source.mode == watch
    for name in (".hidden", "~lock", "x.tmp", "y.part"):
        (inbox / name).write_bytes(b"TEXT:no")
    (inbox / "bad.jpg").write_bytes(b"not an image")
    (tmp_path / "target").write_bytes(b"TEXT:outside")
    (inbox / "link.png").symlink_to(tmp_path / "target")
    (inbox / "later.txt").write_bytes(b"TEXT:hello")
    assert wait_until(lambda: names(tmp_path / "done") == ["early.json", "early.txt", "later.json", "later.txt"])
    assert wait_until(lambda: names(tmp_path / "failed") == ["bad.error.json", "bad.jpg", "link.error.json",
                                                            "link.png"])
    result = json.loads((tmp_path / "done" / "later.json").read_text())
    assert result["text"] == "hello" and result["status"] == "ok" and result["file"] == "later.txt"
    error = json.loads((tmp_path / "failed" / "bad.error.json").read_text())
    assert error["error"]["code"] == "unsupported_image" and error["reason"] and error["time"]
    assert "symlink" in json.loads((tmp_path / "failed" / "link.error.json").read_text())["reason"]
    assert (tmp_path / "failed" / "link.png").is_symlink()
    assert names(inbox) == ["x.tmp", "y.part", "~lock"] and (inbox / ".hidden").exists()
    assert b"TEXT:outside" not in engine.calls  # a symlink is never followed
    assert len(engine.calls) == 3  # early, bad, later; never retried


def test_links_made_in_the_folder_are_taken_at_once_and_a_file_still_written_is_not(tmp_path, folder):
    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    inbox.mkdir()
    outside.mkdir()
    source, engine = folder("inotify", rescan_interval=3600)  # no rescan while the test runs: inotify alone
    assert source.mode == "inotify"
    writing = open(inbox / "slow.txt", "wb")  # created, open, half written: one link, so not taken
    writing.write(b"TEXT:sl")
    writing.flush()
    (outside / "kept.txt").write_bytes(b"TEXT:linked")
    os.link(outside / "kept.txt", inbox / "hard.txt")  # ln: IN_CREATE only, no close-after-write follows
    (inbox / "soft.png").symlink_to(outside / "kept.txt")  # ln -s: the same, and refused
    assert wait_until(lambda: names(tmp_path / "done") == ["hard.json", "hard.txt"])
    assert wait_until(lambda: names(tmp_path / "failed") == ["soft.error.json", "soft.png"])
    assert (outside / "kept.txt").read_bytes() == b"TEXT:linked"  # the other name is left alone
    assert names(inbox) == ["slow.txt"] and engine.calls == [b"TEXT:linked"]
    writing.write(b"ow")
    writing.close()
    assert wait_until(lambda: "slow.json" in names(tmp_path / "done"))
    assert engine.calls == [b"TEXT:linked", b"TEXT:slow"]


def test_resume_from_processing_and_finish_an_interrupted_move(tmp_path, folder):
    processing = tmp_path / "inbox" / ".processing"
    processing.mkdir(parents=True)
    (processing / "left.txt").write_bytes(b"TEXT:left over")
    (processing / "moved.txt").write_bytes(b"TEXT:already done")
    (tmp_path / "done").mkdir()
    # A crash after done/moved.json was written but before the original followed it.
    files = ResultFiles()
    files.store(None, tmp_path / "done", "moved.txt", ".json",
                {"text": "already done", "sha256": __import__("hashlib").sha256(b"TEXT:already done").hexdigest()},
                __import__("hashlib").sha256(b"TEXT:already done").hexdigest())
    _, engine = folder()
    assert wait_until(lambda: names(tmp_path / "done") == ["left.json", "left.txt", "moved.json", "moved.txt"])
    assert engine.calls == [b"TEXT:left over"]
    assert names(processing) == []


def test_identical_content_reuses_the_stored_result(tmp_path, folder):
    (tmp_path / "inbox").mkdir()
    source, engine = folder()
    (tmp_path / "inbox" / "a.txt").write_bytes(b"TEXT:same")
    assert wait_until(lambda: source.stats.get("files_done_total") == 1)  # a's result stored for reuse too
    (tmp_path / "inbox" / "b.txt").write_bytes(b"TEXT:same")
    assert wait_until(lambda: (tmp_path / "done" / "b.json").exists())
    assert len(engine.calls) == 1
    assert json.loads((tmp_path / "done" / "b.json").read_text())["text"] == "same"
    (tmp_path / "inbox" / "a.txt").write_bytes(b"TEXT:different")  # same name, new content
    assert wait_until(lambda: (tmp_path / "done" / "a-1.json").exists())
    assert json.loads((tmp_path / "done" / "a-1.json").read_text())["text"] == "different"
    (tmp_path / "inbox" / "a.png").write_bytes(b"TEXT:same")  # same bytes as a.txt: another file all the same
    assert wait_until(lambda: (tmp_path / "done" / "a-2.json").exists())
    assert names(tmp_path / "done") == ["a-1.json", "a-1.txt", "a-2.json", "a-2.png", "a.json", "a.txt", "b.json",
                                        "b.txt"]
    assert [json.loads((tmp_path / "done" / n).read_text())["file"] for n in ("a.json", "a-2.json")] == ["a.txt",
                                                                                                       "a.png"]
    assert len(engine.calls) == 2  # "same" and "different": each read once
    assert sorted(p.name for p in (tmp_path / "inbox" / ".cache").iterdir()) == sorted(  # one entry per content
        "%s.json" % hashlib.sha256(body).hexdigest() for body in (b"TEXT:same", b"TEXT:different"))


def test_a_result_stored_by_another_model_is_not_reused(tmp_path, folder):
    """After a pack upgrade (or a setting that reads otherwise: OcrEngine.reading_id) the same bytes
    are read again by the new model, not answered with the old one's text under the new model's name."""
    (tmp_path / "inbox").mkdir()
    source, _ = folder(model=("fake", "1"), reading="fake 1")
    (tmp_path / "inbox" / "a.txt").write_bytes(b"TEXT:same")
    assert wait_until(lambda: source.stats.get("files_done_total") == 1)
    stop, thread, pipe = folder.running[-1]
    stop.set()
    thread.join(5)
    pipe.join(5)
    source, upgraded = folder(model=("fake", "2"), reading="fake 2")
    (tmp_path / "inbox" / "b.txt").write_bytes(b"TEXT:same")
    assert wait_until(lambda: (tmp_path / "done" / "b.json").exists())
    assert upgraded.calls == [b"TEXT:same"]  # read again
    assert json.loads((tmp_path / "done" / "b.json").read_text())["model"] == {"name": "fake", "version": "2"}
    (tmp_path / "inbox" / "c.txt").write_bytes(b"TEXT:same")  # the new model's result is the one reused now
    assert wait_until(lambda: (tmp_path / "done" / "c.json").exists())
    assert upgraded.calls == [b"TEXT:same"]


def test_the_same_bytes_read_twice_at_once_keep_one_entry_in_the_reuse_store(tmp_path, folder):
    (tmp_path / "inbox").mkdir()
    for name in ("x1.txt", "x2.txt", "x3.png"):  # there before the start: all claimed before one is stored
        (tmp_path / "inbox" / name).write_bytes(b"TEXT:twice")
    source, _engine = folder()
    assert wait_until(lambda: source.stats.get("files_done_total") == 3)
    sha = hashlib.sha256(b"TEXT:twice").hexdigest()
    assert [p.name for p in (tmp_path / "inbox" / ".cache").iterdir()] == [sha + ".json"]


def test_a_subfolder_or_a_named_pipe_is_left_alone_and_named_once_in_the_journal(tmp_path, folder, caplog):
    inbox = tmp_path / "inbox"
    (inbox / "scans").mkdir(parents=True)
    (inbox / "scans" / "a.txt").write_bytes(b"TEXT:inside")
    os.mkfifo(inbox / "pipe.png")  # never opened: reading it would block the folder for good
    source, engine = folder(watch="poll")
    (inbox / "b.txt").write_bytes(b"TEXT:beside")
    assert wait_until(lambda: source.stats.get("files_done_total") == 1)
    for count in (2, 3):  # more scans, each of which sees the subfolder again
        (inbox / ("c%d.txt" % count)).write_bytes(b"TEXT:later")
        source.capture_now()
        assert wait_until(lambda n=count: source.stats.get("files_done_total") == n)
    assert b"TEXT:inside" not in engine.calls and (inbox / "scans" / "a.txt").exists()
    told = sorted(r.getMessage() for r in caplog.records if "not read" in r.getMessage() or "left alone" in
                  r.getMessage())
    assert told == ["not a regular file, left alone source=inbox file=pipe.png kind=named pipe",
                    "subfolder not read source=inbox dir=scans (only files in the folder itself are taken)"]
    # Removed, then made again: named again. (Names are kept only while they are there: a
    # scanner's dated subfolders, made and removed, grew the set of names told for ever.)
    (inbox / "scans" / "a.txt").unlink()
    (inbox / "scans").rmdir()
    source.capture_now()
    (inbox / "c4.txt").write_bytes(b"TEXT:later")
    assert wait_until(lambda: source.stats.get("files_done_total") == 4)
    (inbox / "scans").mkdir()
    source.capture_now()
    assert wait_until(lambda: sum("dir=scans" in r.getMessage() for r in caplog.records) == 2)


def test_reuse_turned_on_by_a_reload_makes_its_store(tmp_path, folder):
    (tmp_path / "inbox").mkdir()
    source, engine = folder(reuse_results=False)
    assert not (tmp_path / "inbox" / ".cache").exists()
    source.update(dataclasses.replace(source.cfg, reuse_results=True))  # what SIGHUP applies
    (tmp_path / "inbox" / "a.txt").write_bytes(b"TEXT:same")
    assert wait_until(lambda: source.stats.get("files_done_total") == 1)
    (tmp_path / "inbox" / "b.txt").write_bytes(b"TEXT:same")
    assert wait_until(lambda: (tmp_path / "done" / "b.json").exists())
    assert engine.calls == [b"TEXT:same"]  # b reused a's result: the store worked without a restart


def test_a_reloaded_poll_interval_counts_from_the_last_scan_not_the_old_tick(tmp_path, folder):
    (tmp_path / "inbox").mkdir()
    source, _ = folder(watch="poll", poll_interval=3600.0)  # scanned at start, next in an hour
    source.update(dataclasses.replace(source.cfg, poll_interval=0.1))  # what SIGHUP applies
    (tmp_path / "inbox" / "a.txt").write_bytes(b"TEXT:now")
    assert wait_until(lambda: (tmp_path / "done" / "a.json").exists(), timeout_s=10)


def test_the_reuse_store_keeps_only_the_most_recently_used_results(tmp_path, folder):
    (tmp_path / "inbox").mkdir()
    source, engine = folder(reuse_max_entries=2)
    for count, name in enumerate(("a", "b", "a-again", "c"), 1):  # a-again reuses a, so b is the least recently used
        (tmp_path / "inbox" / (name + ".txt")).write_bytes(b"TEXT:" + name.split("-")[0].encode())
        # Counted once the JSON, the original, the reuse store and its pruning are all done.
        assert wait_until(lambda n=count: source.stats.get("files_done_total") == n)
    assert engine.calls == [b"TEXT:a", b"TEXT:b", b"TEXT:c"]
    stored = {json.loads(p.read_text())["text"] for p in (tmp_path / "inbox" / ".cache").iterdir()}
    assert stored == {"a", "c"}


def test_after_the_clock_steps_back_new_results_are_still_the_most_recently_used(tmp_path, folder):
    """A Pi boots with a stale clock (or a wrong one, then NTP steps it back): entries stamped then lie
    in the "future", and stamped with "now" every new result was the first pruned, so reuse stopped."""
    cache = tmp_path / "inbox" / ".cache"
    cache.mkdir(parents=True)
    month_ahead = time.time_ns() + 30 * 86400 * 10**9
    for index, name in enumerate(("x", "y")):
        (cache / (name * 64 + ".json")).write_text("{}")
        os.utime(cache / (name * 64 + ".json"), ns=(month_ahead + index, month_ahead + index))
    source, engine = folder(reuse_max_entries=2)
    for count, name in enumerate(("a", "b", "a-again"), 1):
        (tmp_path / "inbox" / (name + ".txt")).write_bytes(b"TEXT:" + name.split("-")[0].encode())
        assert wait_until(lambda n=count: source.stats.get("files_done_total") == n)
    assert engine.calls == [b"TEXT:a", b"TEXT:b"]  # a-again reused a's result
    assert {json.loads(p.read_text())["text"] for p in cache.iterdir()} == {"a", "b"}


def test_pruning_removes_the_oldest_files_beyond_the_limit(tmp_path):
    for index, name in enumerate(("old", "mid", "new")):
        (tmp_path / name).write_text(name)
        os.utime(tmp_path / name, ns=(index * 10**9, index * 10**9))
    assert prune_least_recent(tmp_path, 5) == 0
    assert prune_least_recent(tmp_path, 1) == 2 and names(tmp_path) == ["new"]


def test_names_and_completeness():
    assert ignored(".x") and ignored("~x") and ignored("a.TMP") and ignored("a.part") and not ignored("a.jpg")


def test_truncated_jpeg_is_not_complete(tmp_path):
    jpg = tmp_path / "a.jpg"
    jpg.write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 100)
    assert not looks_complete(jpg, os.path.getsize(jpg))
    jpg.write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 100 + b"\xff\xd9")
    assert looks_complete(jpg, os.path.getsize(jpg))


def test_a_phone_photo_with_data_after_its_jpeg_end_is_complete_and_a_cut_one_is_not(tmp_path):
    """Motion photos (an MP4 after the JPEG) and makers' trailers put bytes after the end marker:
    such a photo used to wait out incomplete_timeout (60 s) with the folder's thread checking it
    every 20 ms. An EXIF thumbnail's own end marker must not make a cut photo look complete."""
    import cv2
    import numpy as np

    photo = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 96, 3), np.uint8))[1].tobytes()
    thumbnail = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    app1 = b"Exif\0\0" + thumbnail  # a thumbnail inside APP1, before the first scan
    with_thumbnail = photo[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + photo[2:]
    cases = {
        "plain.jpg": (photo, True),
        "motion.jpg": (photo + b"\0\0\0\x18ftypmp42" + bytes(range(256)) * 40, True),
        "thumbnail.jpg": (with_thumbnail, True),
        "cut.jpg": (photo[: len(photo) // 2], False),
        "cut-with-thumbnail.jpg": (with_thumbnail[: len(with_thumbnail) - len(photo) // 2], False),
    }
    for name, (data, complete) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert looks_complete(tmp_path / name, len(data)) is complete, name
        assert jpeg_ends(data) is complete, name


@pytest.mark.parametrize("compression", [1, 5, 8])  # none, LZW, Deflate
def test_a_tiff_whose_strips_are_not_all_written_is_not_complete(tmp_path, compression):
    """A scanner writing a TIFF over SMB with a pause: any TIFF counted as complete, so a scan taken
    at 60 % went to failed/ ("truncated image header") and its whole self then waited there."""
    import cv2
    import numpy as np

    scan = np.random.default_rng(0).integers(0, 255, (600, 400, 3), np.uint8)
    single = cv2.imencode(".tif", scan, [cv2.IMWRITE_TIFF_COMPRESSION, compression])[1].tobytes()
    pages = cv2.imencodemulti(".tif", [scan, scan[::-1]], [cv2.IMWRITE_TIFF_COMPRESSION, compression])[1].tobytes()
    for name, data in (("scan.tif", single), ("pages.tif", pages)):
        for share, complete in ((1.0, True), (0.95, False), (0.6, False), (0.1, False)):
            cut = data[: int(len(data) * share)]
            (tmp_path / name).write_bytes(cut)
            assert looks_complete(tmp_path / name, len(cut)) is complete, (name, share)

    # ImageMagick writes the pixels, then the directory, then its longer values (BitsPerSample of a
    # CMYK page's 4 samples): a cut among those was judged complete and failed to decode
    width = height = 4
    pixels = bytes(range(width * height * 4))
    ifd = 8 + len(pixels)
    entries = [(256, 3, 1, width), (257, 3, 1, height), (258, 3, 4, None), (259, 3, 1, 1), (262, 3, 1, 5),
               (273, 4, 1, 8), (277, 3, 1, 4), (278, 3, 1, height), (279, 4, 1, len(pixels))]
    after = ifd + 2 + 12 * len(entries) + 4
    table = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, kind, n, after) if value is None else struct.pack("<HHIHH", tag, kind, n, value, 0)
        for tag, kind, n, value in entries) + struct.pack("<I", 0)
    cmyk = b"II*\x00" + struct.pack("<I", ifd) + pixels + table + struct.pack("<4H", 8, 8, 8, 8)
    (tmp_path / "cmyk.tif").write_bytes(cmyk)
    assert looks_complete(tmp_path / "cmyk.tif", len(cmyk))
    cut = cmyk[:-4]  # half of BitsPerSample written
    (tmp_path / "cmyk.tif").write_bytes(cut)
    assert not looks_complete(tmp_path / "cmyk.tif", len(cut))


def test_a_symlink_left_in_processing_is_refused_and_its_target_never_read(tmp_path, folder):
    """.processing/ is as writable as the inbox: a link put there is resumed at the next start.
    Before, its target (any file the daemon may read) was read and its text published."""
    secret = tmp_path / "elsewhere.txt"
    secret.write_bytes(b"TEXT:outside the drop folder")
    processing = tmp_path / "inbox" / ".processing"
    processing.mkdir(parents=True)
    (processing / "x.txt").symlink_to(secret)
    _, engine = folder()
    assert wait_until(lambda: names(tmp_path / "failed") == ["x.error.json", "x.txt"])
    assert engine.calls == []
    assert "symlinks are refused" in (tmp_path / "failed" / "x.error.json").read_text()
    assert os.path.islink(tmp_path / "failed" / "x.txt")


def test_a_name_as_long_as_the_filesystem_allows_is_read_and_stored_under_a_shortened_name(tmp_path, folder):
    """255 bytes is the longest name; NAME.json, NAME.error.json and their temp files would not fit.
    Before, such a file stopped the folder's thread (ENAMETOOLONG) and the files after it waited
    for good, across restarts."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    source, _ = folder()
    long_ok, long_bad = "e" * 251 + ".txt", "读" * 80 + "x" * 11 + ".jpg"  # 255 bytes each
    (inbox / long_ok).write_bytes(b"TEXT:long name")
    (inbox / long_bad).write_bytes(b"not an image")
    (inbox / "after.txt").write_bytes(b"TEXT:next file")
    assert wait_until(lambda: len(names(tmp_path / "done")) == 4 and len(names(tmp_path / "failed")) == 2)
    done = {p.name: p for p in (tmp_path / "done").iterdir()}
    assert "after.json" in done and all(len(os.fsencode(n)) <= 255 - 17 for n in done)
    stored = json.loads(next(p for n, p in done.items() if n.startswith("eee") and n.endswith(".json")).read_text())
    assert stored["file"] == long_ok and stored["text"] == "long name"  # the JSON keeps the name as dropped
    error = next(p for p in (tmp_path / "failed").iterdir() if p.name.endswith(".error.json"))
    assert json.loads(error.read_text())["file"] == long_bad and error.name.startswith("读" * 10)
    assert source.status.value == "online" and names(inbox) == []


def test_an_image_named_like_its_result_keeps_both(tmp_path, folder):
    """An image dropped as scan.json: its result is scan.json.json, beside the original scan.json
    (before, the original replaced the result it had just been given)."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    folder()
    (inbox / "scan.json").write_bytes(b"TEXT:a picture named .json")
    assert wait_until(lambda: names(tmp_path / "done") == ["scan.json", "scan.json.json"])
    assert (tmp_path / "done" / "scan.json").read_bytes() == b"TEXT:a picture named .json"
    assert json.loads((tmp_path / "done" / "scan.json.json").read_text())["text"] == "a picture named .json"


def test_folders_removed_while_running_are_made_again(tmp_path, folder):
    """done/ removed (someone tidying up) and the inbox removed and made again: the next files
    are read and stored, where before they stalled or sat in the inbox for good."""
    import shutil

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    folder()
    (inbox / "one.txt").write_bytes(b"TEXT:one")
    assert wait_until(lambda: names(tmp_path / "done") == ["one.json", "one.txt"])
    shutil.rmtree(tmp_path / "done")
    (inbox / "two.txt").write_bytes(b"TEXT:two")
    assert wait_until(lambda: names(tmp_path / "done") == ["two.json", "two.txt"])
    shutil.rmtree(inbox)
    inbox.mkdir()
    (inbox / "three.txt").write_bytes(b"TEXT:three")
    assert wait_until(lambda: names(tmp_path / "done") == ["three.json", "three.txt", "two.json", "two.txt"])


def _inotify_fds() -> int:
    return sum(os.readlink("/proc/self/fd/" + fd) == "anon_inode:inotify" for fd in os.listdir("/proc/self/fd")
               if os.path.exists("/proc/self/fd/" + fd))


def test_a_watch_renewed_after_the_inbox_was_made_again_is_closed_once_at_the_stop(tmp_path, folder, monkeypatch):
    """The inbox removed and made again renews the inotify watch. At the stop, the watch in use is
    closed and nothing is closed twice: before, the replaced watch was closed a second time (an fd
    number by then perhaps another thread's, such as the HTTP server's wake-up pipe) and the new
    one was left open."""
    import shutil

    from edge_ocr.sources import folder as folder_module

    watches = []

    class RecordedInotify(folder_module.Inotify):
        def __init__(self, directory):
            super().__init__(directory)
            watches.append(self)

    monkeypatch.setattr(folder_module, "Inotify", RecordedInotify)
    before = _inotify_fds()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    source, _ = folder(watch="inotify")
    shutil.rmtree(inbox)
    inbox.mkdir()
    (inbox / "after.txt").write_bytes(b"TEXT:after")
    assert wait_until(lambda: names(tmp_path / "done") == ["after.json", "after.txt"])
    assert source.mode == "inotify" and len(watches) == 1 and not watches[0].broken  # renewed in place
    assert _inotify_fds() == before + 1
    stop, thread, _ = folder.running[-1]
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    assert watches[0].fd == -1  # closed, and closed for good: a second close() is a no-op
    assert _inotify_fds() == before


def test_a_defect_on_one_file_fails_that_file_and_the_folder_goes_on(tmp_path, folder, monkeypatch):
    """Whatever goes wrong with one file (here a stand-in for a bug: its read raises), it goes to
    failed/ with the error and the files after it are read."""
    from edge_ocr.sources import folder as module

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    real = module.FolderSource._submit_claimed

    def flaky(self, claimed, resumed=False, name=None):
        if claimed.name == "cursed.txt":
            raise RuntimeError("a defect")
        return real(self, claimed, resumed, name)

    monkeypatch.setattr(module.FolderSource, "_submit_claimed", flaky)
    source, _ = folder()
    (inbox / "cursed.txt").write_bytes(b"TEXT:x")
    assert wait_until(lambda: names(tmp_path / "failed") == ["cursed.error.json", "cursed.txt"])
    (inbox / "fine.txt").write_bytes(b"TEXT:fine")
    assert wait_until(lambda: names(tmp_path / "done") == ["fine.json", "fine.txt"])
    reason = json.loads((tmp_path / "failed" / "cursed.error.json").read_text())["reason"]
    assert "internal error: RuntimeError: a defect" in reason and source.status.value == "online"


def test_a_name_dropped_again_while_the_first_is_read_keeps_its_name(tmp_path, folder):
    """Two files named alike in turn, the first still being read: both results say
    ``"file": "same.txt"`` (the second was claimed as .processing/same-1.txt), stored as same.* and
    same-1.*, as when the second comes after the first is done."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    _, engine = folder()
    engine.gate = threading.Event()
    (inbox / "same.txt").write_bytes(b"TEXT:first")
    assert wait_until(lambda: (inbox / ".processing" / "same.txt").exists())
    (inbox / "same.txt").write_bytes(b"TEXT:second")
    assert wait_until(lambda: (inbox / ".processing" / "same-1.txt").exists())
    engine.gate.set()
    assert wait_until(lambda: names(tmp_path / "done") == ["same-1.json", "same-1.txt", "same.json", "same.txt"])
    files = {json.loads((tmp_path / "done" / n).read_text())["file"] for n in ("same.json", "same-1.json")}
    assert files == {"same.txt"}


def test_a_failed_loop_starts_again_without_reading_twice_what_the_pipeline_holds(tmp_path, folder, monkeypatch):
    """The folder's loop fails (a stand-in for a defect) while a file is being read: the loop
    starts again and does not hand the file in .processing/ to the pipeline a second time (a
    second job would have found the first one's result and lost the original)."""
    from edge_ocr.sources import folder as module

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    fail_once = threading.Event()
    real = module.FolderSource._list

    def listing(self):
        if fail_once.is_set():
            fail_once.clear()
            raise RuntimeError("a defect in the loop")
        return real(self)

    monkeypatch.setattr(module.FolderSource, "_list", listing)
    source, engine = folder("poll")
    engine.gate = threading.Event()
    (inbox / "a.txt").write_bytes(b"TEXT:read once")
    assert wait_until(lambda: engine.calls == [b"TEXT:read once"])
    fail_once.set()
    assert wait_until(lambda: not fail_once.is_set() and source.status.value == "offline")
    assert wait_until(lambda: source.status.value == "online", 30)  # started again
    engine.gate.set()
    assert wait_until(lambda: names(tmp_path / "done") == ["a.json", "a.txt"])
    assert engine.calls == [b"TEXT:read once"]


def test_a_result_that_could_not_be_written_is_written_later_without_reading_the_file_again(tmp_path, folder,
                                                                                           monkeypatch):
    """done/ full for a while: each retry used to run OCR on the file again and publish its result
    again (MQTT subscribers saw it once a minute). The result is kept and written when it can be."""
    from edge_ocr.errors import SinkError

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    real, refusals = ResultFiles.store, []

    def full_twice(self, src, directory, name, suffix, data, sha256):
        if directory == tmp_path / "done" and len(refusals) < 2:
            refusals.append(name)
            raise SinkError("cannot write %s: No space left on device" % directory)
        return real(self, src, directory, name, suffix, data, sha256)

    monkeypatch.setattr(ResultFiles, "store", full_twice)
    _, engine = folder()
    (inbox / "stuck.txt").write_bytes(b"TEXT:kept")
    assert wait_until(lambda: names(tmp_path / "done") == ["stuck.json", "stuck.txt"], 30)
    assert refusals == ["stuck.txt", "stuck.txt"]
    assert engine.calls == [b"TEXT:kept"]  # read once
    assert json.loads((tmp_path / "done" / "stuck.json").read_text())["text"] == "kept"


def test_the_source_is_offline_while_a_result_cannot_be_written_and_not_after_the_file_is_gone(tmp_path, folder,
                                                                                              monkeypatch):
    """A result that cannot be written (disk full) takes the source offline (/readyz); when the
    user removes the stuck file by hand, nothing is left to write and it is online again."""
    from edge_ocr.errors import SinkError

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    real = ResultFiles.store

    def full(self, src, directory, name, suffix, data, sha256):
        if directory == tmp_path / "done":
            raise SinkError("cannot write %s: No space left on device" % directory)
        return real(self, src, directory, name, suffix, data, sha256)

    monkeypatch.setattr(ResultFiles, "store", full)
    source, _ = folder()
    (inbox / "stuck.txt").write_bytes(b"TEXT:kept")
    assert wait_until(lambda: source.status.value == "offline")
    assert (inbox / ".processing" / "stuck.txt").exists()
    (inbox / ".processing" / "stuck.txt").unlink()
    assert wait_until(lambda: source.status.value == "online", 30)  # at the next retry (2 s)


@pytest.mark.parametrize("small_disk", ["1m"], indirect=True)
def test_a_backlog_listed_at_once_waits_in_the_folder_once_results_cannot_be_written(tmp_path, folder, small_disk):
    """Intake pauses within a batch too: 40 files listed at once with done/ full were all claimed,
    read and their results held in memory, each with its own journal line. done/ is a real full
    disk: the pause hangs on the write's own ENOSPC, as files.py reports it."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(40):  # there before the start: one batch
        (inbox / ("f%02d.txt" % i)).write_bytes(b"TEXT:%d" % i)
    done = small_disk / "done"
    done.mkdir()
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as fh, pytest.raises(OSError):
        while True:
            fh.write(b"\0" * 4096)
    source, engine = folder(reuse_results=False, done=done)  # queue_size 2: a claim waits for room
    assert wait_until(lambda: source.status.value == "offline")
    assert wait_until(lambda: source.stats.get("files_stalled_total") >= 1)
    claimed = len(list((inbox / ".processing").iterdir()))
    assert claimed <= 5, claimed  # the one that stalled, the ones in the queue and in the engine
    assert len(engine.calls) == claimed and len(list(inbox.glob("f*.txt"))) == 40 - claimed
    filler.unlink()  # space again: every file is taken, oldest first
    assert wait_until(lambda: len(list(done.glob("*.json"))) == 40, 60)
    rest = [int(call[5:]) for call in engine.calls[claimed:]]
    assert rest == sorted(rest) and len(engine.calls) == 40  # the rest oldest first (written in order)


def test_one_file_whose_result_cannot_be_written_does_not_stop_the_others(tmp_path, folder, monkeypatch):
    """A stall of one file's own (a name done/'s file system refuses, a file the service cannot
    copy) kept every new file waiting for as long as it lasted: only a full or read-only directory
    makes them wait."""
    from edge_ocr.errors import SinkError

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    real = ResultFiles.store

    def store(self, src, directory, name, suffix, data, sha256):
        if name.startswith("odd"):
            raise SinkError("cannot write %s: Invalid argument" % name) from OSError(errno.EINVAL, "Invalid argument")
        return real(self, src, directory, name, suffix, data, sha256)

    monkeypatch.setattr(ResultFiles, "store", store)
    source, _ = folder(reuse_results=False)
    (inbox / "odd.txt").write_bytes(b"TEXT:odd")
    assert wait_until(lambda: source.status.value == "offline")
    for name in ("a.txt", "b.txt"):
        (inbox / name).write_bytes(b"TEXT:" + name.encode())
    assert wait_until(lambda: names(tmp_path / "done") == ["a.json", "a.txt", "b.json", "b.txt"], 30)
    assert (inbox / ".processing" / "odd.txt").exists()  # kept for retry, with its reason


def test_a_file_refused_before_reading_is_announced_like_a_corrupt_image(tmp_path):
    """A symlink, a file over max_file_mb: they went to failed/ with nothing on MQTT or /api/latest,
    where a corrupt image's error result is published (Home Assistant saw nothing)."""
    from edge_ocr.results import Result, Status

    class Published:
        name = "list"

        def __init__(self) -> None:
            self.results: list[Result] = []

        def publish(self, result: Result) -> None:
            self.results.append(result)

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (tmp_path / "target.txt").write_bytes(b"TEXT:outside")
    (inbox / "link.png").symlink_to(tmp_path / "target.txt")
    (inbox / "huge.png").write_bytes(b"TEXT:" + bytes(2 * 1024 * 1024))
    (inbox / "bad.jpg").write_bytes(b"not an image")
    cfg = FolderSourceConfig("inbox", inbox, tmp_path / "done", tmp_path / "failed", watch="poll", poll_interval=0.1,
                             stability_delay=0.05, max_file_mb=1.0)
    stop, engine, stats, sink = threading.Event(), FakeEngine(), Stats(), Published()
    pipe = Pipeline(engine, ("fake", "1"), [sink], stats, stop, queue_size=2)
    source = FolderSource(cfg, pipe.submit, ResultFiles(), stats, reading="fake 1")
    thread = threading.Thread(target=source.run, args=(stop,), name="source:inbox")
    pipe.start()
    thread.start()
    try:
        assert wait_until(lambda: len(sink.results) == 3)
        assert wait_until(lambda: len(names(tmp_path / "failed")) == 6)
    finally:
        stop.set()
        thread.join(5)
        pipe.join(5)
    errors = {r.file: r.error.code for r in sink.results if r.status is Status.ERROR and r.error is not None}
    assert errors == {"link.png": "source", "huge.png": "image_too_large", "bad.jpg": "unsupported_image"}
    assert engine.calls == [b"not an image"]  # the refused ones were never read
    assert stats.get("files_failed_total") == 3 and stats.get("jobs_total") == 1  # jobs/s counts OCR jobs


def test_a_resumed_file_cut_short_before_goes_to_failed_unread_and_another_of_its_name_is_read(tmp_path, folder):
    """.processing/.resumed.json counts the readings of resumed files that a stop or kill cut
    short; a count is the file's only while it is the same file (size and mtime)."""
    processing = tmp_path / "inbox" / ".processing"
    processing.mkdir(parents=True)
    for name in ("poison.txt", "renamed.txt"):
        (processing / name).write_bytes(b"TEXT:" + name.encode())
    st = (processing / "poison.txt").stat()
    (processing / ".resumed.json").write_text(json.dumps({
        "poison.txt": [2, st.st_size, st.st_mtime_ns],  # its readings after two restarts were cut short
        "renamed.txt": [2, 12345, 0],  # another file that had this name
    }))
    _, engine = folder()
    assert wait_until(lambda: names(tmp_path / "failed") == ["poison.error.json", "poison.txt"])
    assert wait_until(lambda: names(tmp_path / "done") == ["renamed.json", "renamed.txt"])
    assert engine.calls == [b"TEXT:renamed.txt"]
    reason = json.loads((tmp_path / "failed" / "poison.error.json").read_text())["reason"]
    assert reason.startswith("source: read again after 2 restarts, its reading was cut short each time")
    assert not (processing / ".resumed.json").exists()


def test_an_inbox_missing_for_a_while_is_polled_then_watched_again(tmp_path, folder):
    """Removed, and made again only after the watch was found broken: the source polled every
    poll_interval for the rest of its life (a file took ~1.6 s instead of ~0.5). It polls while
    the inbox is missing and watches it again once it is back."""
    import shutil

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    source, _ = folder(watch="inotify", poll_interval=0.2, rescan_interval=3600)
    shutil.rmtree(inbox)
    assert wait_until(lambda: source.mode == "poll")
    inbox.mkdir()
    assert wait_until(lambda: source.mode == "inotify")
    (inbox / "back.txt").write_bytes(b"TEXT:back")
    assert wait_until(lambda: names(tmp_path / "done") == ["back.json", "back.txt"])


def test_a_file_read_at_the_guards_smaller_size_is_not_kept_for_reuse(tmp_path, folder):
    """At the memory guard's soft level pages are detected at 640 px: fewer or other lines. That
    reading was stored as the bytes' result and served for them ever after, memory long back."""
    (tmp_path / "inbox").mkdir()
    source, engine = folder()
    _, _, pipe = folder.running[-1]
    pipe.degrade(640)
    (tmp_path / "inbox" / "a.txt").write_bytes(b"TEXT:page")
    assert wait_until(lambda: source.stats.get("files_done_total") == 1)
    assert not list((tmp_path / "inbox" / ".cache").glob("*.json"))
    pipe.recover()
    (tmp_path / "inbox" / "b.txt").write_bytes(b"TEXT:page")
    assert wait_until(lambda: source.stats.get("files_done_total") == 2)
    assert engine.calls == [b"TEXT:page", b"TEXT:page"]  # read again, at the full size
    (tmp_path / "inbox" / "c.txt").write_bytes(b"TEXT:page")
    assert wait_until(lambda: source.stats.get("files_done_total") == 3)
    assert len(engine.calls) == 2  # that reading is kept


@pytest.mark.parametrize("name", [".cache", ".processing"])
def test_a_symlink_put_in_place_of_the_daemons_own_folders_is_never_followed(tmp_path, folder, caplog, name):
    """A writer of the shared inbox swapped .cache for a link to done/: the reuse store's pruning
    deleted other people's results there; .processing as a link to the spool moved the pending
    MQTT messages to failed/. The source stays offline and says why; nothing behind the link moves."""
    done = tmp_path / "done"
    done.mkdir()
    for i in range(5):
        (done / ("kept-%d.json" % i)).write_text("{}")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / name).symlink_to(done)
    (inbox / "a.txt").write_bytes(b"TEXT:dropped")
    with caplog.at_level("WARNING", logger="edge_ocr.sources.folder"):
        source, engine = folder(reuse_max_entries=1)
        assert wait_until(lambda: "is a symlink, not a folder of edge-ocr's own" in caplog.text)
    assert source.status.value == "offline"
    assert names(done) == ["kept-%d.json" % i for i in range(5)] and engine.calls == []
    assert names(inbox) == ["a.txt"]


@pytest.mark.parametrize("watch", ["inotify", "poll"])
def test_processing_swapped_for_a_symlink_while_running_stops_the_claims_until_it_is_removed(tmp_path, folder, watch):
    """In an inbox without the sticky bit a writer can rename the daemon's .processing/ away and
    put a link in its place at any time: no file is moved through it, the source says why, and
    it takes files again once the link is gone."""
    inbox, done = tmp_path / "inbox", tmp_path / "done"
    inbox.mkdir()
    source, engine = folder(watch=watch)
    (inbox / "a.txt").write_bytes(b"TEXT:first")
    assert wait_until(lambda: (done / "a.json").exists())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (inbox / ".processing").rename(tmp_path / "old-processing")
    (inbox / ".processing").symlink_to(elsewhere)
    (inbox / "b.txt").write_bytes(b"TEXT:second")
    assert wait_until(lambda: source.status.value == "offline")
    source.capture_now()  # a rescan: still refused
    assert wait_until(lambda: source.stats.get("files_done_total") == 1) and list(elsewhere.iterdir()) == []
    assert names(inbox) == ["b.txt"] and engine.calls == [b"TEXT:first"]
    (inbox / ".processing").unlink()
    (inbox / "c.txt").write_bytes(b"TEXT:third")  # watched: claimed at once, and the source online again
    assert wait_until(lambda: (done / "c.json").exists() and source.status.value == "online")
    source.capture_now()  # b waited in the inbox: the next scan offers it
    assert wait_until(lambda: (done / "b.json").exists()) and source.status.value == "online"
    assert (inbox / ".processing").is_dir() and not (inbox / ".processing").is_symlink()


def test_a_reuse_store_turned_on_by_a_reload_is_not_used_through_a_symlink(tmp_path, folder, caplog):
    """.cache/ is made only when a reload turns reuse on: a link put there before (to done/) had
    the store's pruning delete other people's results."""
    inbox, done = tmp_path / "inbox", tmp_path / "done"
    inbox.mkdir()
    done.mkdir()
    for i in range(3):
        (done / ("theirs-%d.json" % i)).write_text("{}")
    source, engine = folder(reuse_results=False, reuse_max_entries=1)
    (inbox / ".cache").symlink_to(done)
    with caplog.at_level("WARNING", logger="edge_ocr.sources.folder"):
        source.update(dataclasses.replace(source.cfg, reuse_results=True))  # what SIGHUP applies
        assert "reuse store not used" in caplog.text and "is a symlink" in caplog.text
    for name in ("a.txt", "b.txt"):
        (inbox / name).write_bytes(b"TEXT:same")
        assert wait_until(lambda name=name: (done / name.replace(".txt", ".json")).exists())
    assert engine.calls == [b"TEXT:same"] * 2  # no store, no reuse: each read
    assert [n for n in names(done) if n.startswith("theirs")] == ["theirs-%d.json" % i for i in range(3)]


def test_a_processing_folder_of_another_owner_is_used(tmp_path, folder):
    """Made by a root run before the service ran as its own user, or shown under one uid by a
    vfat, CIFS or NFS mount: the daemon's folder all the same (only a link or a file is refused)."""
    if os.geteuid() != 0:
        pytest.skip("chown: run as root")
    inbox = tmp_path / "inbox"
    (inbox / ".processing").mkdir(parents=True)
    os.chown(inbox / ".processing", 4321, 4321)
    source, _ = folder()
    (inbox / "a.txt").write_bytes(b"TEXT:read")
    assert wait_until(lambda: (tmp_path / "done" / "a.json").exists()) and source.status.value == "online"


def test_a_temp_file_name_taken_by_a_symlink_is_replaced_not_written_through(tmp_path):
    """write_atomic's temp name is predictable (.<name>.<pid>.tmp): a link planted there had the
    service write, as itself, into the file it pointed to."""
    from edge_ocr.atomic import write_atomic

    victim = tmp_path / "someone-elses.json"
    victim.write_text('{"text": "theirs"}')
    target = tmp_path / "scan.json"
    (tmp_path / (".scan.json.%d.tmp" % os.getpid())).symlink_to(victim)
    write_atomic(target, b'{"text": "ours"}')
    assert victim.read_text() == '{"text": "theirs"}' and target.read_bytes() == b'{"text": "ours"}'
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
