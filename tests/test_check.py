"""edge-ocr check: what the service could not use is named before it starts. Folders are tried, not
asked of os.access (as root it says yes to /proc); as root they are tried as the service's user; and
the installed unit's sandbox (ProtectSystem=strict, ProtectHome=yes, PrivateTmp=yes) is applied to
every folder and file, with the drop-in that allows each."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from edge_ocr import sandbox
from edge_ocr.access import SERVICE_USER, dir_problem
from edge_ocr.check import check
from edge_ocr.config import load_config

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "edge-ocr.service"
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="checking as another user needs root")


def test_a_folder_that_can_be_made_is_fine_and_the_try_leaves_nothing(tmp_path):
    assert dir_problem(tmp_path / "inbox" / "deeper") is None
    assert dir_problem(tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_a_folder_under_a_file_is_named_with_the_file(tmp_path):
    (tmp_path / "hostname").write_text("box")
    assert dir_problem(tmp_path / "hostname" / "inbox") == (
        "%s cannot be created: %s is not a directory" % (tmp_path / "hostname" / "inbox", tmp_path / "hostname"))


def test_a_folder_where_nothing_can_be_written_is_named_even_for_root():
    problem = dir_problem(Path("/proc/edge-ocr-inbox"))  # /proc takes no new entries, not even from root
    assert problem is not None and problem.startswith("/proc/edge-ocr-inbox does not exist and /proc is not writable")


def _config(directory: Path, inbox: Path) -> Path:
    config = directory / "config.toml"
    config.write_text('[mqtt]\nenabled = false\n[http]\nenabled = false\n'
                      '[[sources]]\nname = "inbox"\ntype = "folder"\npath = "%s"\n' % inbox)
    return config


@as_root
def test_as_root_the_folders_and_the_config_are_tried_as_the_service_user():
    # A world-traversable place, as /var/lib and /etc are (pytest's tmp_path is root's alone).
    top = Path(tempfile.mkdtemp(prefix="edge-ocr-check-", dir="/tmp"))
    try:
        top.chmod(0o755)
        theirs = top / "theirs"
        theirs.mkdir()
        shutil.chown(theirs, "nobody")
        mine = top / "mine"
        mine.mkdir(mode=0o755)  # root's: nobody may look but not write
        config = load_config(_config(top, mine / "inbox"))
        assert check(config) == []  # root may write anywhere
        as_nobody = check(config, user="nobody")
        assert as_nobody == [
            "sources[0].%s: %s does not exist and %s is not writable by user nobody (uid 65534) (Permission denied)"
            % (key, mine / name, mine) for key, name in (("path", "inbox"), ("done_dir", "done"), ("failed_dir", "failed"))]
        config = load_config(_config(top, theirs / "inbox"))
        assert check(config, user="nobody") == []
        assert list(theirs.iterdir()) == []  # tried, and nothing left behind
        (top / "config.toml").chmod(0o600)  # a password in it, say: the service then cannot read it
        assert check(config, user="nobody") == [
            "config: %s is not readable by user nobody (uid 65534) (Permission denied)" % (top / "config.toml")]
    finally:
        shutil.rmtree(top)


@as_root
def test_a_camera_video_file_is_tried_as_the_service_user_and_its_regions_against_its_frame(tmp_path):
    from tests.frames import text_frame, write_video

    video = write_video(tmp_path / "meter.avi", [text_frame("12.3")] * 3, fps=5)  # 320x240; tmp_path is root's
    config = tmp_path / "config.toml"
    config.write_text('[mqtt]\nenabled = false\n[http]\nenabled = false\n[[sources]]\nname = "meter"\n'
                      'type = "camera"\ndevice = "meter.avi"\nrois = [{ name = "far", box = [5000, 5000, 100, 40] },'
                      ' { name = "edge", box = [250, 200, 300, 200] }, { name = "ok", box = [10, 10, 100, 40] }]\n')
    found = check(load_config(config), user="nobody")
    assert found[0] == ("sources[0] meter: region 'far' box [5000, 5000, 100, 40] lies outside the 320x240 frame; "
                        "region 'edge' box [250, 200, 300, 200] runs past the 320x240 frame")
    assert found[1:] == ["%s: %s is not readable by user nobody (uid 65534) (Permission denied)" % (label, path)
                         for label, path in (("config", config), ("sources[0].device", video))]


def test_a_region_allowing_characters_the_pack_cannot_read_is_named(tmp_path):
    """allowed_chars keeps only those characters in the decoder: a region allowing none the pack
    reads said no_text at every frame and nothing anywhere else. (The default pack reads 18,782
    characters, full-width digits and ☃ among them: only the rarest are missing.)"""
    from tests.frames import text_frame, write_video

    write_video(tmp_path / "meter.avi", [text_frame("12.3")] * 3, fps=5)
    config = tmp_path / "config.toml"
    config.write_text('[mqtt]\nenabled = false\n[http]\nenabled = false\n[[sources]]\nname = "meter"\n'
                      'type = "camera"\ndevice = "meter.avi"\nrois = [{ name = "kwh", box = [10, 10, 100, 40], '
                      'allowed_chars = "0123456789." }, { name = "wide", box = [10, 60, 100, 40], allowed_chars = '
                      '"𝔘ⓐ" }, { name = "mixed", box = [10, 110, 100, 40], allowed_chars = "0123ⓐ☃" }]\n')
    found = check(load_config(config))
    assert found == ["sources[0].rois[1].allowed_chars: pack ppocrv6-small reads none of these characters, so the region "
                     "would never read anything: '𝔘ⓐ'",
                     "sources[0].rois[2].allowed_chars: pack ppocrv6-small cannot read these characters: 'ⓐ'"]


@as_root
def test_mqtt_tls_files_are_tried_as_the_service_user(tmp_path):
    """The daemon reads them at every start: a key only root may read stopped it at once, while
    check (the broker probed as root) said ok."""
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("-----BEGIN-----\n")  # tmp_path is root's alone
    config = tmp_path / "config.toml"
    config.write_text('[mqtt]\nhost = "127.0.0.1"\nport = 1\nca_file = "ca.pem"\ncert_file = "cert.pem"\n'
                      'key_file = "key.pem"\n[http]\nenabled = false\n[[sources]]\nname = "inbox"\n'
                      'path = "%s"\n' % (tmp_path / "inbox"))
    found = check(load_config(config), user="nobody")
    for key, name in (("ca_file", "ca.pem"), ("cert_file", "cert.pem"), ("key_file", "key.pem")):
        assert "mqtt.%s: %s is not readable by user nobody (uid 65534) (Permission denied)" % (
            key, tmp_path / name) in found, found


@as_root
def test_the_cli_checks_as_a_named_user_and_refuses_an_unknown_one(tmp_path):
    config = _config(tmp_path, tmp_path / "inbox")  # tmp_path is root's alone
    run = subprocess.run([sys.executable, "-m", "edge_ocr", "check", "-c", str(config), "--user", "nobody"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "config: %s is not readable by user nobody" % config in run.stdout, run.stdout
    run = subprocess.run([sys.executable, "-m", "edge_ocr", "check", "-c", str(config)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.startswith("ok: %s" % config), run.stdout + run.stderr
    run = subprocess.run([sys.executable, "-m", "edge_ocr", "check", "-c", str(config), "--user", "no-such-user"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "check --user: no such user: no-such-user" in run.stderr


def test_the_service_user_is_the_units_and_the_installers():
    assert "\nUser=%s\n" % SERVICE_USER in UNIT.read_text()
    assert "\nuser=%s\n" % SERVICE_USER in (REPO / "install.sh").read_text()


def _shipped(*drop_in: str) -> sandbox.Sandbox:
    """The shipped unit's sandbox, with drop-in lines after it (a later key wins, as in systemd)."""
    unit = sandbox.parse_show(UNIT.read_text() + "\n" + "\n".join(drop_in))
    assert unit is not None
    return unit


def test_the_shipped_unit_allows_the_default_folders_and_the_installed_files():
    unit = _shipped()
    assert (unit.protect_system, unit.protect_home, unit.private_tmp) == ("strict", "yes", True)
    for folder in ("/var/lib/edge-ocr/inbox", "/var/lib/edge-ocr/done", "/var/lib/edge-ocr/spool"):
        assert sandbox.problem(folder, write=True, sandbox=unit) is None
    for file in ("/etc/edge-ocr/config.toml", "/opt/edge-ocr/venv/share/edge-ocr/models/ppocrv6-small/rec.int8.onnx"):
        assert sandbox.problem(file, write=False, sandbox=unit) is None


@pytest.mark.parametrize(("folder", "names", "drop_in"), [
    ("/srv/scans", "ProtectSystem=strict", ["ReadWritePaths=/srv/scans"]),
    ("/home/pi/scans", "ProtectHome=yes", ["ProtectHome=tmpfs", "BindPaths=/home/pi/scans"]),
])
def test_a_folder_the_service_cannot_write_is_named_with_the_drop_in_that_allows_it(folder, names, drop_in):
    problem = sandbox.problem(folder, write=True, sandbox=_shipped())
    assert problem is not None and names in problem
    assert "`systemctl edit edge-ocr`" in problem and all(line in problem for line in drop_in), problem
    assert sandbox.problem(folder, write=True, sandbox=_shipped(*drop_in)) is None
    # Under ProtectHome=yes a ReadWritePaths= cannot reach into /home (systemd.exec: not nestable).
    if names == "ProtectHome=yes":
        assert sandbox.problem(folder, write=True, sandbox=_shipped("ReadWritePaths=%s" % folder)) is not None


def test_a_drop_folder_in_the_services_own_tmp_is_named():
    problem = sandbox.problem("/tmp/inbox", write=True, sandbox=_shipped())
    assert problem == ("/tmp/inbox is in the service's own /tmp (PrivateTmp=yes): what others put there never "
                       "reaches it; use a folder under /var/lib/edge-ocr or /srv")
    # Without its own /tmp, ProtectSystem=strict leaves /tmp read-only, so the folder needs allowing.
    assert sandbox.problem("/tmp/inbox", True, _shipped("PrivateTmp=no", "ReadWritePaths=/tmp/inbox")) is None


def test_a_file_in_a_home_is_hidden_unless_home_is_read_only():
    assert "is hidden from the service" in sandbox.problem("/home/pi/secret", write=False, sandbox=_shipped())
    assert sandbox.problem("/home/pi/secret", write=False, sandbox=_shipped("ProtectHome=read-only")) is None
    assert "ReadWritePaths=/home/pi/in" in sandbox.problem("/home/pi/in", True, _shipped("ProtectHome=read-only"))


def test_systemctl_show_output_is_read_with_its_optional_and_bound_paths():
    shown = ("LoadState=loaded\nProtectSystem=strict\nProtectHome=tmpfs\nPrivateTmp=yes\n"
             "ReadWritePaths=-/srv/a /srv/b\nBindPaths=/data/in:/home/pi/in:rbind\nStateDirectory=edge-ocr\n")
    unit = sandbox.parse_show(shown)
    assert unit is not None
    assert unit.read_write == ("/srv/a", "/srv/b", "/var/lib/edge-ocr") and unit.bound == ("/home/pi/in",)
    assert sandbox.problem("/home/pi/in", write=True, sandbox=unit) is None
    assert sandbox.parse_show("LoadState=not-found\n") is None


def test_check_names_the_sandboxs_problems_beside_the_folders(tmp_path):
    config = load_config(_config(tmp_path, tmp_path / "inbox"))  # tmp_path is under /tmp
    # (a checkout under /tmp adds its pack's files, rightly: not what this test is about)
    problems = [p for p in check(config, unit=_shipped()) if not p.startswith("model")]
    assert problems[:1] == ["config: %s is in the service's own /tmp (PrivateTmp=yes): what others put there "
                            "never reaches it; use a folder under /var/lib/edge-ocr or /srv" % (tmp_path / "config.toml")]
    assert [p.split(":")[0] for p in problems] == ["config", "sources[0].path", "sources[0].done_dir",
                                                    "sources[0].failed_dir"]


def test_the_daemons_folder_error_says_how_to_allow_the_folder_under_systemd(monkeypatch):
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    assert sandbox.hint("/srv/scans", 30) == ""  # EROFS, outside systemd: no guess
    monkeypatch.setenv("INVOCATION_ID", "0123")
    assert sandbox.hint("/srv/scans", 30) == (" (read-only to the service, likely its ProtectSystem=strict: "
                                              "`systemctl edit edge-ocr`, [Service] ReadWritePaths=/srv/scans)")
    assert "BindPaths=/home/pi/scans" in sandbox.hint("/home/pi/scans", 13)
    assert sandbox.hint("/srv/scans", 13) == ""  # plain permissions: the message says whose


def test_an_http_port_held_by_another_program_is_named_and_one_held_by_edge_ocr_is_not():
    """The daemon could not listen there and stopped, while check said ok. The running service
    itself, checked before a restart, holds its port: that is no problem."""
    import socket

    import bottle

    from edge_ocr.api.server import HttpServer
    from edge_ocr.check import http_problem

    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen(1)
    try:
        port = other.getsockname()[1]
        assert http_problem("127.0.0.1:%d" % port) == "cannot listen on 127.0.0.1:%d: Address already in use" % port
    finally:
        other.close()
    server = HttpServer(bottle.Bottle(), "127.0.0.1:0", 1)
    server.start()
    try:
        assert http_problem("127.0.0.1:%d" % server.port) is None
    finally:
        assert server.stop(5)
    assert http_problem("127.0.0.1:%d" % server.port) is None  # free again
