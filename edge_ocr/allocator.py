"""glibc malloc settings for a process that holds big, short-lived image buffers.

``configure(memory)`` runs once at process start (the CLI, the daemon after its config is read,
the bench's children), before the engine's threads exist:

- always one malloc arena: glibc gives each allocating thread its own arena and keeps freed
  memory in each; with lines read on two threads a page run peaked at 363 MB with the default
  arenas and 310 MB with one, at the same speed (x86_64, 2 cores);
- ``memory = "low"``: blocks of 1 MB and more get their own mappings, given back to the kernel
  when freed. By default glibc raises that threshold as big blocks are freed, then serves them
  from the heap and keeps the freed pages: on eval-dev pages it held ~175-195 MB free in the
  heap after a run (``edge-ocr bench --memory``). The cost is page faults on every image: on 20
  eval-dev pages at 2 threads, peak RSS 289 -> 216 MB for p50 304 -> 439 ms (256 KB: 205 MB,
  669 ms; 4 MB: 224 MB, 423 ms; 16 MB: 287 MB, 349 ms). Hence an option, not the default.

Transparent huge pages (``HUGEPAGE_TUNABLE``): glibc ≥ 2.35 asks the kernel for huge pages
(2 MB on x86_64 and on arm64 with 4 KB pages) for its heap and its mapped blocks when
``GLIBC_TUNABLES`` says so. The engine runs ONNX Runtime without its arena, so every run
allocates and frees its activations; on huge pages that costs far fewer page faults: with
``memory = "low"`` pages took 0.75x the CPU on x86_64 (docs/memory.md; not measured on a Pi).
glibc reads the variable only at process start, so it is set where processes are started: the
systemd unit and the bench's children (``with_hugepages``). Where the kernel's THP mode is
``never`` or glibc is older, it does nothing; with ``always`` the kernel gives them anyway.

Imports ctypes, os and pathlib only. Elsewhere (musl, macOS) it does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

M_MMAP_THRESHOLD = -3  # glibc mallopt parameters
M_ARENA_MAX = -8
LOW_MEMORY_MMAP_THRESHOLD = 1024 * 1024
MODES = ("default", "low")
HUGEPAGE_TUNABLE = "glibc.malloc.hugetlb=1"  # also in systemd/edge-ocr.service (a test keeps them equal)
_HUGEPAGE_NAME, _, _HUGEPAGE_VALUE = HUGEPAGE_TUNABLE.partition("=")
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _tunables(environ: Mapping[str, str]) -> dict[str, str]:
    """``GLIBC_TUNABLES`` (``name=value:name=value``) as a dict."""
    pairs = (item.partition("=") for item in environ.get("GLIBC_TUNABLES", "").split(":") if item)
    return {name: value for name, _, value in pairs}


def with_hugepages(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` for a child process, with ``HUGEPAGE_TUNABLE`` added to ``GLIBC_TUNABLES``;
    a ``glibc.malloc.hugetlb`` value set there already is kept (``=0`` turns it off)."""
    env = dict(environ)
    tunables = _tunables(env)
    if _HUGEPAGE_NAME not in tunables:
        tunables[_HUGEPAGE_NAME] = _HUGEPAGE_VALUE
        env["GLIBC_TUNABLES"] = ":".join("%s=%s" % pair for pair in tunables.items())
    return env


def glibc_version() -> tuple[int, int] | None:
    """(major, minor) of the running glibc, or None under another C library."""
    try:
        name, _, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").partition(" ")  # "glibc 2.36"
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) if name == "glibc" else None
    except (AttributeError, OSError, TypeError, ValueError):
        return None


def huge_pages_on(environ: Mapping[str, str], thp_mode: str, glibc: tuple[int, int] | None) -> bool:
    """Whether a process started with ``environ`` gets its big blocks on huge pages: always under
    the kernel's ``always`` mode; under ``madvise`` only with glibc ≥ 2.35 and the tunable set."""
    if thp_mode == "always":
        return True
    tunable_set = _tunables(environ).get(_HUGEPAGE_NAME) == _HUGEPAGE_VALUE
    return thp_mode == "madvise" and glibc is not None and glibc >= (2, 35) and tunable_set


def read_thp_mode(path: Path = THP_MODE) -> str:
    """The kernel's transparent huge page mode (``always``, ``madvise`` or ``never``), or ``""``
    for a kernel without them."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    return text[text.find("[") + 1 : text.find("]")] if "[" in text else ""


def _libc_function(name: str) -> Any:
    """A function of the C library by name, or None (no glibc, or no such symbol)."""
    path = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(path), name, None) if path else None
    except OSError:
        return None


def configure(memory: str = "default") -> bool:
    """Apply the settings for ``memory`` ("default" or "low"); False where glibc is absent."""
    if memory not in MODES:
        raise ValueError("memory: expected one of %s, got %r" % (", ".join(MODES), memory))
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    ok = mallopt(M_ARENA_MAX, 1) == 1
    if memory == "low":
        ok = mallopt(M_MMAP_THRESHOLD, LOW_MEMORY_MMAP_THRESHOLD) == 1 and ok
    return bool(ok)


def trim() -> bool:
    """Give glibc's free heap pages back to the kernel (``malloc_trim(0)``): the memory guard's
    soft level and the daemon's idle trim. True if memory was released; False where there was
    none or glibc is absent."""
    malloc_trim = _libc_function("malloc_trim")
    return bool(malloc_trim(0)) if malloc_trim is not None else False
