#!/usr/bin/env bash
# install.sh — install edge-ocr. Idempotent: run it again to upgrade.
#   sudo ./install.sh              system install: user edge-ocr, venv in /opt/edge-ocr, config in
#                                  /etc/edge-ocr (kept on upgrade; on a board with <= 1 GB of memory
#                                  config/pi-zero-2w.toml), state in /var/lib/edge-ocr, systemd unit
#   ./install.sh --dev             a .venv in this checkout (editable, with the test tools); no root
#   sudo ./install.sh --uninstall  remove what the system install added, keeping config and data
#   sudo ./install.sh --purge      remove config and data too (also: --uninstall --purge)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-python3}
prefix=/opt/edge-ocr
etc=/etc/edge-ocr
state=/var/lib/edge-ocr
unit=/etc/systemd/system/edge-ocr.service
user=edge-ocr

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }
has_systemd() { [ -d /run/systemd/system ]; }
# EDGE_OCR_DEVICE_MODEL: another device-tree model file, for the tests.
is_raspberry_pi() { grep -qi 'raspberry pi' "${EDGE_OCR_DEVICE_MODEL:-/proc/device-tree/model}" 2>/dev/null; }

apt_install() {
    command -v apt-get >/dev/null || die "missing packages ($*) and no apt-get to install them"
    say "installing with apt-get: $*"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

need_python() {
    command -v "$python" >/dev/null || { is_root && apt_install python3 python3-venv; } \
        || die "$python not found; on Debian: sudo apt-get install python3 python3-venv"
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "Python 3.11 or newer is required ($("$python" --version 2>&1) found)"
    if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
        is_root || die "the venv module is missing; on Debian: sudo apt-get install python3-venv"
        apt_install python3-venv
    fi
}

# MemTotal in MB (EDGE_OCR_MEMINFO: another meminfo file, for the tests).
mem_total_mb() { awk '/^MemTotal:/ { print int($2 / 1024) }' "${EDGE_OCR_MEMINFO:-/proc/meminfo}" 2>/dev/null; }

# The config a fresh install writes. A board with 1 GB or less (a Pi Zero 2 W, a Pi 3, a 1 GB CM4:
# Linux reports 430-950 MB of it) gets the small-board profile (guard 220/300 MB, one thread, the
# low-memory allocator): the default hard limit of 600 MB is more than a 512 MB board has, and on
# 1 GB it would leave the services beside the daemon a few hundred MB.
config_for_this_machine() {
    local mb
    mb=$(mem_total_mb) || mb=""
    if [ -n "$mb" ] && [ "$mb" -gt 0 ] && [ "$mb" -le 1024 ]; then
        echo "$here/config/pi-zero-2w.toml"
    else
        echo "$here/config/edge-ocr.toml"
    fi
}

# pip arguments for the target machine: Raspberry Pi OS's picamera2 is built against numpy 1.x,
# and opencv-python-headless 5 needs numpy 2, so a Pi keeps both on their 1.x-compatible lines.
pip_constraints() {
    if is_raspberry_pi && [ "$(apt_numpy_major)" = 1 ]; then
        echo "numpy<2" "opencv-python-headless<4.12"
    fi
}

# Whether the venv at $1 runs the same Python version as $python.
venv_matches() {
    local wanted have
    wanted=$("$python" -c 'import sys; print(sys.version_info[:2])') || return 1
    have=$("$1/bin/python" -c 'import sys; print(sys.version_info[:2])' 2>/dev/null) || return 1
    [ "$have" = "$wanted" ]
}

# The major version of Debian's python3-numpy (what apt's picamera2 is built against): 1 on Bookworm,
# 2 on Trixie, whose Python 3.13 has no numpy 1.x wheels at all; empty when it is not installed.
apt_numpy_major() {
    dpkg-query -W -f='${Version}' python3-numpy 2>/dev/null | sed 's/^[0-9]*://' | cut -d. -f1
}

# Debian packages the tests use for real: a broker (tests start their own on a free loopback
# port, never the system service), openssl for its TLS certificates, headless Chromium for the
# try-it page, systemd-analyze for the unit, promtool (Debian's prometheus package) for /metrics,
# libfaketime (the reliability suite's wall-clock jump), two CJK fonts (Chinese lines rendered in
# tests/engine/test_punctuation.py); for the proofs (root only): systemd-nspawn and
# debootstrap (the service under a booted systemd), qemu-user-static (the engine on aarch64).
dev_system_packages() {
    local missing=()
    PATH="$PATH:/usr/sbin:/sbin"
    command -v mosquitto >/dev/null 2>&1 || missing+=(mosquitto)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
    command -v faketime >/dev/null 2>&1 || missing+=(faketime)
    [ -f /usr/share/fonts/truetype/arphic/uming.ttc ] || missing+=(fonts-arphic-uming)
    [ -f /usr/share/fonts/truetype/arphic/ukai.ttc ] || missing+=(fonts-arphic-ukai)
    if is_root; then
        command -v systemd-nspawn >/dev/null 2>&1 || missing+=(systemd-container)
        command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
        command -v qemu-aarch64-static >/dev/null 2>&1 || missing+=(qemu-user-static)
    fi
    if ! command -v promtool >/dev/null 2>&1; then
        if is_root; then
            # Only its promtool, which lints /metrics: without the recommended node exporter service.
            apt_install --no-install-recommends prometheus
        else
            missing+=(prometheus)
        fi
    fi
    [ ${#missing[@]} -eq 0 ] && return 0
    if is_root; then
        apt_install "${missing[@]}"
    else
        say "warning: the tests that need ${missing[*]} will skip; install them with: sudo apt-get install --no-install-recommends ${missing[*]}"
    fi
}

# onnxruntime publishes no 32-bit ARM wheel (nor a source package): pip's "from versions: none"
# would come after the user and the venv were made. The userland decides, not `uname -m`
# (aarch64 under 32-bit Raspberry Pi OS with its 64-bit kernel).
need_64_bit() {
    local bits
    bits=$("$python" -c 'import struct; print(struct.calcsize("P") * 8)' 2>/dev/null) || return 0
    [ "$bits" = 64 ] || die "a 64-bit OS is required (this Python is ${bits}-bit; ONNX Runtime has no 32-bit ARM build): install Raspberry Pi OS (64-bit)"
}

install_dev() {
    need_python
    need_64_bit
    dev_system_packages
    local venv="$here/.venv"
    if [ ! -x "$venv/bin/python" ]; then
        say "creating $venv"
        "$python" -m venv "$venv"
    fi
    say "installing edge-ocr (editable) and the test tools into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    # shellcheck disable=SC2046
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$here[dev]" $(pip_constraints)
    "$venv/bin/edge-ocr" models verify >/dev/null || die "bundled models failed their sha256 check (edge-ocr models verify)"
    say "done: $venv/bin/edge-ocr --help · tests: $venv/bin/python -m pytest"
}

install_system() {
    is_root || die "the system install needs root: sudo $0 (or --dev for a local .venv)"
    need_python
    need_64_bit
    umask 022  # sudo keeps a stricter umask (077, CIS's 027): /opt/edge-ocr must be readable by the service user
    local site=()
    if is_raspberry_pi; then
        dpkg -s python3-picamera2 >/dev/null 2>&1 || apt_install python3-picamera2
        site=(--system-site-packages)  # picamera2 and libcamera come from apt, not pip
    fi

    make_service_user
    getent group video >/dev/null && usermod -a -G video "$user"

    say "installing into $prefix/venv"
    mkdir -p "$prefix"
    # A venv of another Python (a Debian release upgrade: 3.11 -> 3.13) cannot run its packages: made anew.
    if ! venv_matches "$prefix/venv"; then
        [ ! -x "$prefix/venv/bin/python" ] || say "the venv's Python is not $python's: making it anew"
        "$python" -m venv --clear "${site[@]}" "$prefix/venv"
    fi
    "$prefix/venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    # pip builds in the checkout, and setuptools copies from a build/ left by an earlier install:
    # a module deleted since (git pull) would come back. Each install builds afresh.
    rm -rf "$here/build"
    # ... and leaves build/ and *.egg-info owned by root in the user's checkout, where
    # `./install.sh --dev` then failed ("Cannot update time stamp of directory 'edge_ocr.egg-info'"):
    # removed when this script exits, whether pip succeeded or not.
    trap 'rm -rf "$here/build" "$here"/*.egg-info' EXIT
    # shellcheck disable=SC2046
    "$prefix/venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$here" $(pip_constraints)
    # Models live at <venv>/share/edge-ocr/models, where edge_ocr.engine.models looks in a wheel install.
    rm -rf "$prefix/venv/share/edge-ocr/models.new"
    mkdir -p "$prefix/venv/share/edge-ocr"
    cp -r "$here/models" "$prefix/venv/share/edge-ocr/models.new"
    rm -rf "$prefix/venv/share/edge-ocr/models"
    mv "$prefix/venv/share/edge-ocr/models.new" "$prefix/venv/share/edge-ocr/models"
    install -m 0644 "$here/README.md" "$here/LICENSE" "$prefix/"
    install -d -m 0755 "$prefix/docs"  # the README's links: the full accuracy, speed and memory records
    install -m 0644 "$here"/docs/*.md "$here"/docs/*.png "$prefix/docs/"
    "$prefix/venv/bin/edge-ocr" models verify >/dev/null || die "installed models failed their sha256 check"

    install -d -m 0755 "$etc"
    if [ -f "$etc/config.toml" ]; then
        install -m 0644 "$here/config/edge-ocr.toml" "$etc/config.toml.example"
        say "kept $etc/config.toml; the new example is $etc/config.toml.example"
    else
        local config
        config=$(config_for_this_machine)
        install -m 0644 "$config" "$etc/config.toml"
        say "wrote $etc/config.toml (from config/$(basename "$config"), for $(mem_total_mb || echo '?') MB of memory)"
    fi
    install -d -m 0750 -o "$user" -g "$user" "$state" "$state/inbox" "$state/done" "$state/failed" "$state/spool"
    # Writers (scanners, Syncthing, SMB) drop files here as members of group edge-ocr. Sticky: a
    # writer may rename or delete only its own files, not the daemon's .processing/ and .cache/
    # (swapped for symlinks, they sent its moves and prunes into done/ or its spool).
    chmod 3770 "$state/inbox"

    install -m 0644 "$here/systemd/edge-ocr.service" "$unit"
    if has_systemd; then
        systemctl daemon-reload
        systemctl enable edge-ocr.service >/dev/null
        systemctl restart edge-ocr.service
        say "started: systemctl status edge-ocr · journalctl -u edge-ocr -f"
    elif command -v systemctl >/dev/null 2>&1 && systemctl enable edge-ocr.service >/dev/null 2>&1; then
        # a chroot building an SD card image, a container: enabled offline, it starts at the next boot
        say "installed and enabled; systemd is not running here, so the service starts at the next boot"
    else
        say "installed; systemd is not running here, so the service was not started"
    fi
}

uninstall() {
    local purge=$1
    is_root || die "uninstall needs root"
    if has_systemd && [ -f "$unit" ]; then
        systemctl disable --now edge-ocr.service >/dev/null 2>&1 || true
    fi
    rm -f "$unit"
    # The unit's drop-ins (systemctl edit: ReadWritePaths= for a folder) are configuration too.
    [ "$purge" = yes ] && rm -rf "$unit.d"
    has_systemd && systemctl daemon-reload || true
    rm -rf "$prefix"
    if [ "$purge" = yes ]; then
        rm -rf "$etc" "$state"
        id "$user" >/dev/null 2>&1 && userdel "$user"
        # userdel keeps a group that still has members (writers added to it for the drop folder)
        if getent group "$user" >/dev/null; then groupdel "$user" || true; fi
        say "removed edge-ocr with its config and data"
    else
        say "removed edge-ocr; kept $etc and $state (--purge removes them)"
    fi
}

# The service's system user. A group of its name may be there already (its members kept it at a
# --purge, or it was made first for the folder's writers): the user joins it rather than fail on it.
make_service_user() {
    id "$user" >/dev/null 2>&1 && return 0
    say "creating system user $user"
    local group=(--user-group)
    if getent group "$user" >/dev/null; then
        group=(--gid "$user")
    fi
    useradd --system "${group[@]}" --home-dir "$state" --no-create-home --shell /usr/sbin/nologin "$user"
}

# The one action the arguments ask for; "--uninstall --purge" (either order) is --purge, as the
# SPEC words it: never a silent keep of what was asked to be removed.
install_action() {
    case "$*" in
        "--uninstall --purge"|"--purge --uninstall") echo --purge; return ;;
    esac
    [ $# -le 1 ] || die "one option at a time, got: $* (try --help)"
    case "${1:-}" in
        ""|--dev|--uninstall|--purge|-h|--help) echo "${1:-}" ;;
        *) die "unknown option: $1 (try --help)" ;;
    esac
}

# Sourced (the tests), it stops here: the functions and settings above, no install.
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0
action="$(install_action "$@")" || exit 2
case "$action" in
    "") install_system ;;
    --dev) install_dev ;;
    --uninstall) uninstall no ;;
    --purge) uninstall yes ;;
    -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' ;;
esac
