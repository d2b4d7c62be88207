"""install.sh's choice of config for the machine it runs on, read from /proc/meminfo, and of the
action its arguments ask for (the system install itself, as root under a booted systemd, is tests/test_install_systemd.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from edge_ocr.config import load_config
from edge_ocr.fit import fit

REPO = Path(__file__).resolve().parents[1]


def config_for(meminfo: Path) -> str:
    run = subprocess.run(["bash", "-c", "source ./install.sh && config_for_this_machine"], cwd=REPO,
                         env={"PATH": "/usr/bin:/bin", "EDGE_OCR_MEMINFO": str(meminfo)},
                         capture_output=True, text=True, timeout=30, check=True)
    return Path(run.stdout.strip()).relative_to(REPO).as_posix()


@pytest.mark.parametrize("mem_total_kb, config", [
    (437_452, "config/pi-zero-2w.toml"),  # Pi Zero 2 W, 512 MB
    (948_304, "config/pi-zero-2w.toml"),  # Pi 3 B+ or a CM4 with 1 GB
    (1_918_712, "config/edge-ocr.toml"),  # Pi 4 with 2 GB
    (24_682_000, "config/edge-ocr.toml"),
])
def test_a_board_with_1_gb_or_less_gets_the_small_board_profile(tmp_path, mem_total_kb, config):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       %d kB\nMemFree:        1000 kB\n" % mem_total_kb)
    assert config_for(meminfo) == config


def test_without_a_meminfo_the_default_config_is_written(tmp_path):
    assert config_for(tmp_path / "absent") == "config/edge-ocr.toml"


def test_the_small_board_profile_fits_a_pi_zero_and_the_default_does_not():
    pi_zero_mb = 437_452 / 1024
    assert fit(load_config(REPO / "config" / "pi-zero-2w.toml").guard, pi_zero_mb, None) is None
    assert fit(load_config(REPO / "config" / "edge-ocr.toml").guard, pi_zero_mb, None) is not None


def install_action(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", 'source ./install.sh && install_action "$@"', "install.sh", *args],
                          cwd=REPO, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("args, action", [
    ((), ""), (("--dev",), "--dev"), (("--uninstall",), "--uninstall"), (("--purge",), "--purge"),
    (("--uninstall", "--purge"), "--purge"), (("--purge", "--uninstall"), "--purge"),  # the SPEC's words
])
def test_the_arguments_choose_one_action_and_uninstall_purge_is_purge(args, action):
    run = install_action(*args)
    assert (run.returncode, run.stdout.strip()) == (0, action)


@pytest.mark.parametrize("args", [("--bogus",), ("--dev", "--purge"), ("--uninstall", "--dev")])
def test_other_arguments_are_refused_by_name(args):
    run = install_action(*args)
    assert run.returncode != 0 and run.stdout == ""
    assert run.stderr.startswith("install.sh: error:") and args[0] in run.stderr


@pytest.mark.parametrize("group_exists, expected", [(False, "--user-group"), (True, "--gid edge-ocr")])
def test_the_service_user_joins_a_group_of_its_name_left_from_before(tmp_path, group_exists, expected):
    """A --purge keeps the group when writers were added to it; useradd --user-group then refused
    it and the next install stopped there. Commands stubbed on PATH; nothing on this machine changes."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    log = tmp_path / "calls"
    for name, body in (("id", "exit 1"), ("getent", "exit %d" % (0 if group_exists else 2)),
                       ("useradd", 'echo "useradd $*" >> %s' % log)):
        (stubs / name).write_text("#!/bin/sh\n%s\n" % body)
        (stubs / name).chmod(0o755)
    run = subprocess.run(["bash", "-c", "source ./install.sh && make_service_user"], cwd=REPO,
                         env={"PATH": "%s:/usr/bin:/bin" % stubs}, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert log.read_text() == ("useradd --system %s --home-dir /var/lib/edge-ocr --no-create-home --shell "
                               "/usr/sbin/nologin edge-ocr\n" % expected)


@pytest.mark.parametrize("bits, refused", [("32", True), ("64", False)])
def test_a_32_bit_userland_is_refused_before_anything_is_made(tmp_path, bits, refused):
    """onnxruntime has no 32-bit ARM wheel: pip failed after the service user and the venv were made.
    The userland's Python decides (32-bit Raspberry Pi OS runs a 64-bit kernel: uname says aarch64)."""
    python = tmp_path / "python3"
    python.write_text("#!/bin/sh\necho %s\n" % bits)
    python.chmod(0o755)
    run = subprocess.run(["bash", "-c", "source ./install.sh && need_64_bit && echo fine"], cwd=REPO,
                         env={"PATH": "/usr/bin:/bin", "PYTHON": str(python)}, capture_output=True, text=True,
                         timeout=30)
    assert (run.returncode != 0) is refused, run
    assert ("a 64-bit OS is required" in run.stderr) is refused and ("fine" in run.stdout) is not refused


def _fake(path: Path, output: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\necho '%s'\n" % output)
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("apt_numpy, pins", [
    ("1:1.24.2-1+deb12u1", "numpy<2 opencv-python-headless<4.12"),  # Bookworm: picamera2 built on numpy 1
    ("1:2.2.4+ds-1", ""),  # Trixie: numpy 2, and Python 3.13 has no numpy 1 wheels (the pin made it unsolvable)
])
def test_a_pi_pins_numpy_1_only_where_apt_numpy_is_1(tmp_path, apt_numpy, pins):
    _fake(tmp_path / "bin" / "dpkg-query", apt_numpy)
    model = tmp_path / "model"
    model.write_text("Raspberry Pi 4 Model B Rev 1.4\0")
    run = subprocess.run(["bash", "-c", "source ./install.sh && pip_constraints"], cwd=REPO, check=True,
                         env={"PATH": "%s:/usr/bin:/bin" % (tmp_path / "bin"), "EDGE_OCR_DEVICE_MODEL": str(model)},
                         capture_output=True, text=True, timeout=30)
    assert run.stdout.strip() == pins


@pytest.mark.parametrize("venv_version, matches", [("(3, 11)", True), ("(3, 13)", False), (None, False)])
def test_a_venv_of_another_python_is_made_anew(tmp_path, venv_version, matches):
    """After bookworm -> trixie the kept venv's python was 3.13 over 3.11's packages: pip was gone."""
    python = _fake(tmp_path / "python3", "(3, 11)")
    if venv_version is not None:
        _fake(tmp_path / "venv" / "bin" / "python", venv_version)
    run = subprocess.run(["bash", "-c", 'source ./install.sh && venv_matches "$1"', "x", str(tmp_path / "venv")],
                         cwd=REPO, env={"PATH": "/usr/bin:/bin", "PYTHON": str(python)}, capture_output=True,
                         text=True, timeout=30)
    assert (run.returncode == 0) is matches, run


def test_without_root_the_dev_install_names_every_missing_test_tool_promtool_too(tmp_path):
    """`install.sh --dev` as a user cannot apt-get: it names what the skipped tests need. promtool
    (Debian's prometheus) was installed as root only and never named, so /metrics went unlinted."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "id").write_text("#!/bin/sh\necho 1000\n")
    (stubs / "id").chmod(0o755)
    run = subprocess.run(["/bin/bash", "-c", "source ./install.sh && dev_system_packages"], cwd=REPO,
                         env={"PATH": str(stubs)}, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    warning = run.stdout.strip().splitlines()[-1]
    assert "the tests that need" in warning and "will skip" in warning
    for package in ("prometheus", "openssl", "chromium", "faketime"):  # none of them on this PATH
        assert package in warning.split("need")[1].split("will skip")[0].split()
    assert "apt-get" in warning and "sudo" in warning
