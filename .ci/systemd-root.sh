#!/usr/bin/env bash
# .ci/systemd-root.sh — the cached pieces of the systemd proof (tests/test_install_systemd.py):
#   $CACHE/bookworm-root   a minimal Debian bookworm (debootstrap minbase + systemd, python3-venv,
#                          mosquitto) that systemd-nspawn boots; never booted itself: the test boots
#                          an overlay of it, so the cache stays pristine
#   $CACHE/wheels-x86_64/<key>  the x86_64 cp311 wheels of the project's dependencies, so install.sh
#                          runs offline inside the container (PIP_NO_INDEX=1 PIP_FIND_LINKS=...)
# Each is rebuilt only when missing or when its recipe (package list / dependency list) changed.
# Prints two lines: root=PATH and wheels=PATH. Needs root, debootstrap, network on a cold cache.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${EDGE_OCR_CI_CACHE:-/var/cache/edge-ocr-ci}
mirror=${EDGE_OCR_CI_MIRROR:-}
packages=systemd,systemd-sysv,dbus,python3,python3-venv,mosquitto,mosquitto-clients
say() { printf 'systemd-root.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root"
command -v debootstrap >/dev/null || die "debootstrap missing (apt-get install debootstrap)"
mkdir -p "$cache"
exec 9>"$cache/.systemd-root.lock"
flock -w 900 9 || die "another build holds $cache/.systemd-root.lock"

# The mirror apt uses here (deb822 or one-line sources), else deb.debian.org.
if [ -z "$mirror" ]; then
    mirror=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
        | grep -oE 'https?://[^ ]+/debian/?$|https?://[^ ]+/debian ' | head -n1 | tr -d ' ') || true
    mirror=${mirror:-http://deb.debian.org/debian}
fi

root=$cache/bookworm-root
recipe="bookworm minbase $packages"
if [ ! -f "$root/.edge-ocr-ci-complete" ] || [ "$(cat "$root/.edge-ocr-ci-complete")" != "$recipe" ]; then
    say "building $root from $mirror (a few minutes; cached afterwards)"
    rm -rf "$root.new" "$root"
    debootstrap --variant=minbase --include="$packages" bookworm "$root.new" "$mirror" >"$cache/debootstrap.log" 2>&1 \
        || { tail -n 20 "$cache/debootstrap.log" >&2; die "debootstrap failed (log: $cache/debootstrap.log)"; }
    # What an installed system has and debootstrap leaves to the installer.
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root.new/etc/hosts"
    echo edge-ocr-ci >"$root.new/etc/hostname"
    : >"$root.new/etc/machine-id"           # systemd makes one at each boot of the overlay
    chroot "$root.new" apt-get clean
    echo "$recipe" >"$root.new/.edge-ocr-ci-complete"
    mv "$root.new" "$root"
fi

# The project's runtime dependencies (pyproject) plus the build backend and pip itself.
deps=$(python3 - "$repo/pyproject.toml" <<'EOF'
import sys, tomllib
data = tomllib.load(open(sys.argv[1], "rb"))
print("\n".join(sorted(data["project"]["dependencies"] + data["build-system"]["requires"] + ["wheel", "pip"])))
EOF
)
key=$(printf '%s\n' "$deps" | sha256sum | cut -c1-16)
wheels=$cache/wheels-x86_64/$key
if [ ! -f "$wheels/.complete" ]; then
    say "downloading the x86_64 cp311 wheels into $wheels"
    rm -rf "$wheels.new"
    mkdir -p "$wheels.new"
    mapfile -t reqs <<<"$deps"
    python3 -m pip download --quiet --disable-pip-version-check --dest "$wheels.new" --only-binary=:all: \
        --python-version 3.11 --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux_2_28_x86_64 --platform linux_x86_64 --platform any "${reqs[@]}" >&2 \
        || die "pip download failed"
    touch "$wheels.new/.complete"
    rm -rf "$wheels"
    mv "$wheels.new" "$wheels"
fi

echo "root=$root"
echo "wheels=$wheels"
