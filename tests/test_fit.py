from __future__ import annotations

from edge_ocr.config import GuardConfig
from edge_ocr.fit import cgroup_memory_max_mb, fit

PI_ZERO_MB = 427.0  # MemTotal of a 512 MB Pi Zero 2 W


def test_limits_a_small_board_cannot_give_are_named_with_the_profile_that_fits():
    unfit = fit(GuardConfig(), PI_ZERO_MB, None)
    assert unfit is not None and (unfit.hard_mb, unfit.limit) == (600, "machine")
    assert unfit.message() == (
        "guard.rss_hard_mb 600 is over 80 % of this machine's memory, 427 MB: the kernel would stop the daemon "
        "before its memory guard does; lower guard.rss_soft_mb and rss_hard_mb (a board with 1 GB or less: "
        "config/pi-zero-2w.toml)")
    assert fit(GuardConfig(rss_soft_mb=220, rss_hard_mb=300), PI_ZERO_MB, None) is None  # the profile's limits
    assert fit(GuardConfig(), 24_000.0, None) is None


def test_a_cgroup_limit_tighter_than_the_machine_counts_and_the_defaults_fit_the_unit():
    assert fit(GuardConfig(), 24_000.0, 750.0) is None  # the unit's MemoryMax=750M: 600 = 0.8 x 750
    unfit = fit(GuardConfig(), 24_000.0, 512.0)
    assert unfit is not None and (unfit.limit, unfit.limit_mb) == ("cgroup", 512.0)
    assert "its cgroup's memory limit, 512 MB" in unfit.message() and "pi-zero" not in unfit.message()


def test_the_cgroup_limit_is_the_tightest_of_the_service_and_its_parents(tmp_path):
    proc = tmp_path / "cgroup"
    root = tmp_path / "fs"
    service = root / "system.slice" / "edge-ocr.service"
    service.mkdir(parents=True)
    (root / "memory.max").write_text("max\n")
    (root / "system.slice" / "memory.max").write_text("max\n")
    (service / "memory.max").write_text("786432000\n")
    proc.write_text("0::/system.slice/edge-ocr.service\n")
    assert cgroup_memory_max_mb(proc, root) == 750.0
    (root / "system.slice" / "memory.max").write_text("%d\n" % (512 * 1024 * 1024))
    assert cgroup_memory_max_mb(proc, root) == 512.0
    (service / "memory.max").write_text("max\n")
    (root / "system.slice" / "memory.max").write_text("max\n")
    assert cgroup_memory_max_mb(proc, root) is None  # no limit anywhere


def test_a_container_limit_on_its_own_root_is_read_and_cgroup_v1_is_not(tmp_path):
    proc = tmp_path / "cgroup"
    root = tmp_path / "fs"
    root.mkdir()
    (root / "memory.max").write_text("%d\n" % (300 * 1024 * 1024))
    proc.write_text("0::/\n")  # a container's namespace root holds the limit
    assert cgroup_memory_max_mb(proc, root) == 300.0
    proc.write_text("4:memory:/user.slice\n1:cpu:/\n")  # cgroup v1 only: not read
    assert cgroup_memory_max_mb(proc, root) is None
    assert cgroup_memory_max_mb(tmp_path / "absent", root) is None
