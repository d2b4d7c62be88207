"""Whether the memory guard's limits fit where the daemon runs: its hard limit must sit under the
memory the kernel lets the process have, or the OOM killer (or the cgroup's ``memory.max``, the
unit's ``MemoryMax``) stops the daemon before the guard can degrade it or let it exit cleanly.

``fit`` is the pure rule; ``cgroup_memory_max_mb`` reads cgroup v2 files; ``check_fit`` applies
both to this process. Used at daemon start (a warning) and by ``edge-ocr check`` (a problem line).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psutil

from edge_ocr.config import GuardConfig
from edge_ocr.stats import MB

# The hard limit may use at most this share of the memory the process can have; the rest is for
# the kernel, the page cache and the other services of a small board. The defaults sit exactly on
# it: rss_hard_mb 600 = 0.8 x the unit's MemoryMax=750M.
FIT_SHARE = 0.8
# The config for a board with 1 GB or less (install.sh writes it there): guard limits 220 / 300.
SMALL_BOARD_PROFILE = "config/pi-zero-2w.toml"


@dataclass(frozen=True, slots=True)
class Unfit:
    """A hard limit over ``FIT_SHARE`` of ``limit_mb``, the memory of the machine (``limit`` =
    "machine") or of the process's cgroup ("cgroup")."""

    hard_mb: int
    limit_mb: float
    limit: str

    @property
    def profile(self) -> str | None:
        """The config that fits, when the machine itself is too small (a cgroup limit is the
        operator's own choice)."""
        return SMALL_BOARD_PROFILE if self.limit == "machine" else None

    def message(self) -> str:
        """One line for ``edge-ocr check``."""
        where = "this machine's memory" if self.limit == "machine" else "its cgroup's memory limit"
        hint = " (a board with 1 GB or less: %s)" % self.profile if self.profile else ""
        return ("guard.rss_hard_mb %d is over %d %% of %s, %.0f MB: the kernel would stop the daemon before its "
                "memory guard does; lower guard.rss_soft_mb and rss_hard_mb%s"
                % (self.hard_mb, round(100 * FIT_SHARE), where, self.limit_mb, hint))


def fit(limits: GuardConfig, total_mb: float, cgroup_max_mb: float | None) -> Unfit | None:
    """None when ``limits.rss_hard_mb`` is at most ``FIT_SHARE`` of the machine's ``total_mb`` and
    of the cgroup's limit (when there is one); else what it is over."""
    limit_mb, limit = total_mb, "machine"
    if cgroup_max_mb is not None and cgroup_max_mb < total_mb:
        limit_mb, limit = cgroup_max_mb, "cgroup"
    if limits.rss_hard_mb <= FIT_SHARE * limit_mb:
        return None
    return Unfit(limits.rss_hard_mb, limit_mb, limit)


def cgroup_memory_max_mb(proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")
                         ) -> float | None:
    """The tightest ``memory.max`` of this process's cgroup v2 and its ancestors, in MB; None when
    none is set (``max``), under cgroup v1, or unreadable."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    path = next((line[3:] for line in lines if line.startswith("0::")), None)
    if path is None:
        return None
    limits = []
    node = root / path.strip("/")
    while True:
        try:
            value = (node / "memory.max").read_text().strip()
        except OSError:
            value = "max"
        if value.isdigit():
            limits.append(int(value) / MB)
        if node == root or root not in node.parents:
            break
        node = node.parent
    return min(limits) if limits else None


def check_fit(limits: GuardConfig) -> Unfit | None:
    """``fit`` for this process: psutil's total memory and the cgroup it runs in (for ``edge-ocr
    check`` run from a shell, the shell's cgroup, not the service's)."""
    try:
        total_mb = psutil.virtual_memory().total / MB
    except (psutil.Error, OSError):
        return None
    return fit(limits, total_mb, cgroup_memory_max_mb())
