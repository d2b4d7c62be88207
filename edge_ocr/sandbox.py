"""The unit's view of the file system: which paths the systemd sandbox hides or makes read-only.

The unit runs the daemon with ``ProtectSystem=strict`` (everything read-only but its state
directory), ``ProtectHome=yes`` (/home, /root and /run/user hidden) and ``PrivateTmp=yes`` (its own
/tmp). A drop folder in /home/pi or /srv then fails in the service although the same user can write
it from a shell. ``edge-ocr check`` asks systemd for the unit's effective settings (drop-ins
included) and names each folder or file the service could not use, with the drop-in that allows it;
the daemon adds the same hint to its own error when a folder is read-only to it.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import PurePosixPath

UNIT = "edge-ocr.service"
HOME_DIRS = ("/home", "/root", "/run/user")  # what ProtectHome= covers
TMP_DIRS = ("/tmp", "/var/tmp")  # what PrivateTmp= replaces
# What ProtectSystem=strict leaves writable besides the unit's own paths: API file systems.
STRICT_WRITABLE = ("/dev", "/proc", "/sys", "/run/systemd/notify")
PROPERTIES = ("LoadState", "ProtectSystem", "ProtectHome", "PrivateTmp", "ReadWritePaths", "BindPaths",
              "StateDirectory", "RuntimeDirectory")


@dataclass(frozen=True, slots=True)
class Sandbox:
    """The unit's file-system settings, as ``systemctl show`` gives them."""

    protect_system: str = "no"  # no | yes | full | strict
    protect_home: str = "no"  # no | yes | read-only | tmpfs
    private_tmp: bool = False
    read_write: tuple[str, ...] = ()  # ReadWritePaths=, StateDirectory= and RuntimeDirectory= as paths
    bound: tuple[str, ...] = ()  # BindPaths= destinations


def parse_show(text: str) -> Sandbox | None:
    """A Sandbox from ``systemctl show -p ...`` output (``Key=value`` lines, each key once; a unit
    file reads the same where no list key repeats); None when the unit is not installed."""
    values = dict(line.split("=", 1) for line in text.splitlines()
                  if "=" in line and not line.startswith(("#", ";")))  # a unit file's comments too
    if values.get("LoadState", "loaded") != "loaded":
        return None
    read_write = [p.lstrip("-") for p in values.get("ReadWritePaths", "").split()]
    read_write += ["/var/lib/" + name for name in values.get("StateDirectory", "").split()]
    read_write += ["/run/" + name for name in values.get("RuntimeDirectory", "").split()]
    # BindPaths: "[-]SOURCE[:DEST[:OPTIONS]]" entries; the path the service sees is DEST, else SOURCE.
    bound = []
    for entry in values.get("BindPaths", "").split():
        parts = entry.lstrip("-").split(":")
        bound.append(parts[1] if len(parts) > 1 and parts[1] else parts[0])
    return Sandbox(
        protect_system=_word(values.get("ProtectSystem", "no")),
        protect_home=_word(values.get("ProtectHome", "no")),
        private_tmp=_word(values.get("PrivateTmp", "no")) == "yes",
        read_write=tuple(read_write),
        bound=tuple(bound),
    )


def installed_unit(unit: str = UNIT, timeout_s: float = 10.0) -> Sandbox | None:
    """The installed unit's effective sandbox, or None (no systemd, or the unit is not installed)."""
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return None
    try:
        done = subprocess.run([systemctl, "show", unit, "--property=" + ",".join(PROPERTIES)],
                              capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_show(done.stdout) if done.returncode == 0 else None


def problem(path: PurePosixPath | os.PathLike[str] | str, write: bool, sandbox: Sandbox, unit: str = UNIT
            ) -> str | None:
    """Why the service could not use ``path`` (a folder it writes when ``write``, else a file it
    reads) under ``sandbox``, with the drop-in that would allow it; None when it can."""
    path = PurePosixPath(os.path.normpath(os.fspath(path)))
    edit = _edit(unit)
    in_home = _under(path, HOME_DIRS)
    allow_home = ("%s is hidden from the service (ProtectHome=%s): allow it with %s, under [Service]: "
                  "ProtectHome=tmpfs and BindPaths=%s" % (path, sandbox.protect_home, edit, path))
    # Under ProtectHome=yes nothing can be bound or made writable (systemd.exec: not nestable).
    if in_home and sandbox.protect_home == "yes":
        return allow_home
    if _under(path, sandbox.bound):
        return None
    if sandbox.private_tmp and _under(path, TMP_DIRS):
        return ("%s is in the service's own %s (PrivateTmp=yes): what others put there never reaches it; "
                "use a folder under /var/lib/edge-ocr or /srv" % (path, _root_of(path, TMP_DIRS)))
    if in_home and sandbox.protect_home == "tmpfs":
        return allow_home
    if in_home and sandbox.protect_home == "read-only":
        if not write or _under(path, sandbox.read_write):
            return None
        return ("%s is read-only to the service (ProtectHome=read-only): allow it with %s, under [Service]: "
                "ReadWritePaths=%s (the folder must exist)" % (path, edit, path))
    if not write:
        return None
    if _under(path, sandbox.read_write) or _under(path, STRICT_WRITABLE):
        return None
    read_only = {"strict": ("/",), "full": ("/usr", "/boot", "/efi", "/etc"), "yes": ("/usr", "/boot", "/efi")}
    if _under(path, read_only.get(sandbox.protect_system, ())):
        return ("%s is read-only to the service (ProtectSystem=%s): allow it with %s, under [Service]: "
                "ReadWritePaths=%s (the folder must exist)" % (path, sandbox.protect_system, edit, path))
    return None


def hint(path: os.PathLike[str] | str, error: int) -> str:
    """What to add to a folder error in the service: where systemd's sandbox is the likely cause,
    how to allow the folder; else ''. Only under systemd (``INVOCATION_ID``)."""
    if "INVOCATION_ID" not in os.environ:
        return ""
    path = PurePosixPath(os.path.normpath(os.fspath(path)))
    edit = _edit(UNIT)
    if error == errno.EROFS:
        return " (read-only to the service, likely its ProtectSystem=strict: %s, [Service] ReadWritePaths=%s)" % (
            edit, path)
    if error in (errno.EACCES, errno.ENOENT) and _under(path, HOME_DIRS):
        return " (likely hidden by the unit's ProtectHome=: %s, [Service] ProtectHome=tmpfs, BindPaths=%s)" % (
            edit, path)
    return ""


def _edit(unit: str) -> str:
    return "`systemctl edit %s`" % unit.removesuffix(".service")


def _word(value: str) -> str:
    lowered = value.strip().lower()
    return {"true": "yes", "1": "yes", "on": "yes", "false": "no", "0": "no", "off": "no"}.get(lowered, lowered)


def _under(path: PurePosixPath, roots: tuple[str, ...] | list[str]) -> bool:
    return any(path == PurePosixPath(root) or PurePosixPath(root) in path.parents for root in roots if root)


def _root_of(path: PurePosixPath, roots: tuple[str, ...]) -> str:
    return next(root for root in roots if _under(path, (root,)))
