#!/usr/bin/env bash
# install.sh — set up edge-ocr.
#   ./install.sh --dev    a .venv in this checkout with edge-ocr (editable) and the test tools; no root
# The system install (service user, /opt venv, systemd unit) is tracked separately and not
# in this version yet: run --dev.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-python3}

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

need_python() {
    command -v "$python" >/dev/null || die "$python not found; on Debian: apt-get install python3 python3-venv"
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "Python 3.11 or newer is required ($("$python" --version 2>&1) found)"
    if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
        if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
            say "installing python3-venv with apt-get"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        else
            die "the venv module is missing; on Debian: sudo apt-get install python3-venv"
        fi
    fi
}

install_dev() {
    need_python
    local venv="$here/.venv"
    if [ ! -x "$venv/bin/python" ]; then
        say "creating $venv"
        "$python" -m venv "$venv"
    fi
    say "installing edge-ocr (editable) and the test tools into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$here[dev]"
    "$venv/bin/edge-ocr" models verify >/dev/null || die "bundled models failed their sha256 check (edge-ocr models verify)"
    say "done: $venv/bin/edge-ocr --help · tests: $venv/bin/python -m pytest"
}

case "${1:-}" in
    --dev) install_dev ;;
    -h|--help|"")
        sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
        [ -n "${1:-}" ] || exit 2 ;;
    *) die "unknown option: $1 (try --help)" ;;
esac
