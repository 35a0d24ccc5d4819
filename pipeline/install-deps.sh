#!/bin/sh
# Installs every Debian 12 / Ubuntu package mpquant needs to build, test and
# run (including its private Slurm test cluster). Idempotent: packages that are
# already installed are skipped, and the list of what gets installed is printed.
# Must run as root (or with sudo available). Test-only Python packages are not
# installed here: the tests that use them pip-install pinned versions into a
# virtual environment under ~/.cache/mpquant (python3-venv).
set -eu

PKGS="build-essential cmake pkg-config git ca-certificates
openmpi-bin libopenmpi-dev
libopenblas-dev liblapacke-dev
libscalapack-openmpi-dev
libhdf5-openmpi-dev hdf5-tools
libconfig-dev libcjson-dev libssl-dev libcmocka-dev
slurm-wlm munge shellcheck
gnuplot-nox clang clang-format jq procps coreutils util-linux iproute2
libclang-rt-14-dev valgrind
python3 python3-venv libpcre2-dev zlib1g-dev libzstd-dev libunistring-dev"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "install-deps: must run as root (or with sudo)" >&2
        exit 1
    fi
fi

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    echo "install-deps: all packages already installed"
    exit 0
fi

echo "install-deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
echo "install-deps: done"
