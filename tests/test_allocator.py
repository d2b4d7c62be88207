"""edge_ocr.allocator: glibc's malloc settings, applied for real in this process."""

from __future__ import annotations

import pytest


def test_the_allocator_is_configured_on_glibc():
    import platform

    from edge_ocr import allocator

    assert allocator.configure("default") is (platform.libc_ver()[0] == "glibc")
    assert allocator.configure("low") is (platform.libc_ver()[0] == "glibc")
    with pytest.raises(ValueError, match="memory"):
        allocator.configure("tiny")


def _rss_mb() -> float:
    import os

    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_trim_gives_the_free_heap_back_to_the_kernel():
    import platform

    from edge_ocr import allocator

    if platform.libc_ver()[0] != "glibc":
        assert allocator.trim() is False
        return
    # 80 MB of 4 KB blocks, every 50th kept: the freed pages sit between live ones, so glibc
    # cannot shrink its heap from the top and keeps them until trimmed.
    blocks = [bytearray(4096) for _ in range(20_000)]
    kept = blocks[::50]
    del blocks
    before = _rss_mb()
    assert allocator.trim() is True
    assert before - _rss_mb() > 40
    assert len(kept) == 400


def test_children_get_glibcs_huge_pages_and_keep_other_tunables():
    from edge_ocr.allocator import HUGEPAGE_TUNABLE, with_hugepages

    assert with_hugepages({"PATH": "/bin"}) == {"PATH": "/bin", "GLIBC_TUNABLES": HUGEPAGE_TUNABLE}
    assert with_hugepages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=1"})["GLIBC_TUNABLES"] == (
        "glibc.malloc.arena_max=1:" + HUGEPAGE_TUNABLE)
    # someone measuring without huge pages says so, and keeps it
    assert with_hugepages({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=0"


def test_the_kernels_huge_page_mode_is_read_from_sysfs(tmp_path):
    from edge_ocr.allocator import read_thp_mode

    mode = tmp_path / "enabled"
    mode.write_text("always [madvise] never\n")
    assert read_thp_mode(mode) == "madvise"
    assert read_thp_mode(tmp_path / "missing") == ""


def test_huge_pages_need_the_tunable_a_new_glibc_and_a_kernel_that_offers_them():
    from edge_ocr.allocator import HUGEPAGE_TUNABLE, huge_pages_on

    tunable = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=1:" + HUGEPAGE_TUNABLE}
    assert huge_pages_on(tunable, "madvise", (2, 36))
    assert not huge_pages_on({}, "madvise", (2, 36))
    assert not huge_pages_on({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise", (2, 36))
    assert not huge_pages_on(tunable, "madvise", (2, 31))  # Debian bullseye: no such tunable
    assert not huge_pages_on(tunable, "madvise", None)  # musl
    assert not huge_pages_on(tunable, "never", (2, 36)) and not huge_pages_on(tunable, "", (2, 36))
    assert huge_pages_on({}, "always", None)  # the kernel gives them to every mapping


def test_the_running_glibc_version_is_read():
    import platform

    from edge_ocr.allocator import glibc_version

    libc, version = platform.libc_ver()
    expected = tuple(int(x) for x in version.split(".")[:2]) if libc == "glibc" else None
    assert glibc_version() == expected


# A child that mallocs a 64 MB block (glibc gives blocks that big their own mapping), touches it and
# prints how much of its anonymous memory is on huge pages. ctypes, not numpy: numpy advises huge
# pages for its own big arrays, ONNX Runtime's buffers come from plain malloc.
HUGE_PAGE_PROBE = """
import ctypes
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
block = libc.malloc(64 * 2**20)
ctypes.memset(block, 1, 64 * 2**20)
for line in open("/proc/self/smaps_rollup"):
    if line.startswith("AnonHugePages:"):
        print(int(line.split()[1]))
"""


def _anon_huge_kb(env: dict[str, str]) -> int:
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", HUGE_PAGE_PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return int(run.stdout)


def test_the_tunable_puts_big_buffers_on_huge_pages():
    """What the systemd unit's GLIBC_TUNABLES does, for real: with it a big buffer lies on 2 MB
    pages; without it (the kernel's mode being madvise, as on Debian) it does not."""
    import os

    from edge_ocr.allocator import glibc_version, read_thp_mode, with_hugepages

    glibc = glibc_version()
    if glibc is None or glibc < (2, 35):
        pytest.skip("glibc < 2.35 has no glibc.malloc.hugetlb")
    mode = read_thp_mode()
    if mode not in ("madvise", "always"):
        pytest.skip("this kernel's transparent huge pages are %r" % (mode or "absent"))
    plain = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    assert _anon_huge_kb(with_hugepages(plain)) >= 2048
    if mode == "madvise":
        assert _anon_huge_kb(plain) == 0
