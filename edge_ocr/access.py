"""Can this process (or another user) write the folders and read the files the daemon needs?

``edge-ocr check`` asks it. Run as root, it asks as the service's user (``SERVICE_USER``, the
unit's ``User=``): root can read a config made ``chmod 600`` and write into a folder owned by
root, where the daemon then fails. Writability is tried, not asked of ``os.access``, which as
root says yes to /proc and to read-only mounts.
"""

from __future__ import annotations

import json
import os
import pwd
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edge_ocr import sandbox

SERVICE_USER = "edge-ocr"  # systemd/edge-ocr.service's User= and install.sh's user (a test keeps them equal)


@dataclass(frozen=True, slots=True)
class Wanted:
    """What the daemon needs: ``label`` names it in a problem, e.g. ``sources[0].path``."""

    label: str
    path: Path
    write: bool  # a folder the daemon writes (made on start if missing); else a file it reads


def who() -> str:
    """This process's user as a problem names it, e.g. ``user edge-ocr (uid 998)``."""
    uid = os.geteuid()
    try:
        return "user %s (uid %d)" % (pwd.getpwuid(uid).pw_name, uid)
    except KeyError:
        return "uid %d" % uid


def dir_problem(directory: Path) -> str | None:
    """Why this process could not use ``directory`` (created on start if missing), or None."""
    existing = directory
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        is_dir = existing.is_dir()
    except OSError as exc:  # a folder above it this user may not enter
        return "%s is not reachable by %s (%s)" % (directory, who(), exc.strerror or exc)
    if not is_dir:
        return "%s cannot be created: %s is not a directory" % (directory, existing)
    try:
        tempfile.TemporaryDirectory(dir=existing, prefix=".edge-ocr-check-").cleanup()
    except OSError as exc:
        where = "" if existing == directory else " does not exist and %s" % existing
        return "%s%s is not writable by %s (%s)%s" % (directory, where, who(), exc.strerror or exc,
                                                     sandbox.hint(existing, exc.errno or 0))
    return None


def file_problem(path: Path) -> str | None:
    """Why this process could not read the file ``path``, or None."""
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        return "%s is not readable by %s (%s)" % (path, who(), exc.strerror or exc)
    return None


def problems(wanted: list[Wanted]) -> list[str]:
    """One ``label: reason`` line per thing this process could not use."""
    found = []
    for item in wanted:
        problem = dir_problem(item.path) if item.write else file_problem(item.path)
        if problem:
            found.append("%s: %s" % (item.label, problem))
    return found


def problems_as(user: str, wanted: list[Wanted]) -> list[str]:
    """``problems`` as ``user`` would meet them: asked in a forked child that takes that user's
    ids and groups (needs root; a fork, not a new interpreter, which the user may not be allowed to
    run). Raises KeyError for an unknown user, OSError when the child fails."""
    account = pwd.getpwnam(user)
    groups = os.getgrouplist(user, account.pw_gid)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to the user, answer, leave without running the parent's cleanup
        code = 1
        try:
            os.close(read_end)
            os.setgroups(groups)
            os.setgid(account.pw_gid)
            os.setuid(account.pw_uid)
            with os.fdopen(write_end, "w", encoding="utf-8") as out:
                json.dump(problems(wanted), out)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, encoding="utf-8") as answer:
        text = answer.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise OSError("the check as user %s failed (exit %d)" % (user, os.waitstatus_to_exitcode(status)))
    return [str(line) for line in json.loads(text)]


def service_user() -> str | None:
    """The user to check as when none is given: the service's when run as root and it exists."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return None
    return SERVICE_USER
