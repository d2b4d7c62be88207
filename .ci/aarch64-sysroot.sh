#!/usr/bin/env bash
# .ci/aarch64-sysroot.sh REQUIREMENT... — the cached pieces of the aarch64 proof (tests/test_aarch64.py):
#   $CACHE/arm64/sysroot      Debian bookworm's arm64 python3.11 with its library closure, unpacked
#                             (dpkg -x) from the .debs; apt resolves the closure in a private apt root
#                             (APT::Architecture=arm64), so the host's dpkg and apt lists stay untouched
#   $CACHE/arm64/site/<key>   the aarch64 wheels for REQUIREMENT... (pip install --target), key = their hash
# Rebuilt only when missing or when the recipe changed. Prints sysroot=PATH and site=PATH.
# Run programs with: qemu-aarch64-static -L SYSROOT SYSROOT/usr/bin/python3.11 (PYTHONPATH=SITE:REPO).
set -euo pipefail

cache=${EDGE_OCR_CI_CACHE:-/var/cache/edge-ocr-ci}/arm64
mirror=${EDGE_OCR_CI_MIRROR:-http://deb.debian.org/debian}
security=${EDGE_OCR_CI_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
packages="python3.11 libstdc++6 libgcc-s1 libgomp1"
python=${PYTHON:-python3}
say() { printf 'aarch64-sysroot.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$#" -gt 0 ] || die "usage: $0 REQUIREMENT..."
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || die "needs apt-get and dpkg-deb (Debian/Ubuntu)"
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock -w 900 9 || die "another build holds $cache/.lock"

sysroot=$cache/sysroot
recipe="bookworm arm64 $packages"
if [ ! -f "$sysroot/.complete" ] || [ "$(cat "$sysroot/.complete")" != "$recipe" ]; then
    say "building $sysroot"
    apt=$cache/apt
    rm -rf "$apt" "$sysroot.new"
    mkdir -p "$apt/state/lists/partial" "$apt/cache/archives/partial" "$apt/etc/apt.conf.d" "$apt/etc/preferences.d"
    : >"$apt/state/status"
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    [ -f "$keyring" ] || die "missing $keyring (apt-get install debian-archive-keyring)"
    cat >"$apt/etc/sources.list" <<EOF
deb [arch=arm64 signed-by=$keyring] $mirror bookworm main
deb [arch=arm64 signed-by=$keyring] $mirror bookworm-updates main
deb [arch=arm64 signed-by=$keyring] $security bookworm-security main
EOF
    opts=(-o APT::Architecture=arm64 -o APT::Architectures::=arm64 -o Dir::State="$apt/state"
          -o Dir::State::status="$apt/state/status" -o Dir::Cache="$apt/cache"
          -o Dir::Etc::SourceList="$apt/etc/sources.list" -o Dir::Etc::SourceParts="$apt/etc/none"
          -o Dir::Etc::Parts="$apt/etc/apt.conf.d" -o Dir::Etc::Preferences="$apt/etc/preferences"
          -o Dir::Etc::PreferencesParts="$apt/etc/preferences.d" -o Debug::NoLocking=1 -qq)
    apt-get "${opts[@]}" update >&2 || die "apt-get update (arm64 lists) failed"
    # An empty dpkg status makes apt download the whole dependency closure of $packages.
    # shellcheck disable=SC2086
    apt-get "${opts[@]}" install --download-only --no-install-recommends -y $packages >&2 || die "apt-get download failed"
    mkdir -p "$sysroot.new"
    for deb in "$apt"/cache/archives/*.deb; do dpkg-deb -x "$deb" "$sysroot.new"; done
    ls "$apt"/cache/archives/*.deb | xargs -n1 basename >"$sysroot.new/.debs"
    rm -rf "$apt"
    [ -x "$sysroot.new/usr/bin/python3.11" ] || die "python3.11 not in the unpacked closure"
    echo "$recipe" >"$sysroot.new/.complete"
    rm -rf "$sysroot"
    mv "$sysroot.new" "$sysroot"
fi

key=$(printf '%s\n' "$@" | sort | sha256sum | cut -c1-16)
site=$cache/site/$key
if [ ! -f "$site/.complete" ]; then
    say "installing the aarch64 wheels into $site: $*"
    rm -rf "$site.new"
    mkdir -p "$site.new"
    "$python" -m pip install --quiet --disable-pip-version-check --no-compile --target "$site.new" \
        --only-binary=:all: --python-version 3.11 --implementation cp --platform manylinux2014_aarch64 \
        --platform manylinux_2_17_aarch64 --platform manylinux_2_28_aarch64 "$@" >&2 || die "pip install --target failed"
    printf '%s\n' "$@" >"$site.new/.complete"
    rm -rf "$site"
    mv "$site.new" "$site"
fi

echo "sysroot=$sysroot"
echo "site=$site"
