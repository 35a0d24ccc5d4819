#!/bin/sh
# README command 1: on a fresh Debian 12 machine (as root, from a clean
# clone), install every dependency, build mpquant (Release) and run the main
# job on the default configuration (mixed precision at 3.0 code bits per weight;
# the checkpoint goes to out/stories260K-mixed3.mpq.h5).
#
#   sh pipeline/setup-and-run.sh            # 2 MPI ranks (MPQ_NP to change)
set -eu
cd "$(dirname "$0")/.."
sh pipeline/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
NP="${MPQ_NP:-2}"
ROOTFLAG=""
[ "$(id -u)" -eq 0 ] && ROOTFLAG="--allow-run-as-root"
# The default configuration writes its checkpoint into out/ (the atomic
# writer needs an existing directory).
mkdir -p out
echo "setup-and-run: mpirun -np $NP build/mpquant run configs/default.cfg"
# shellcheck disable=SC2086
exec mpirun -np "$NP" --oversubscribe $ROOTFLAG build/mpquant run configs/default.cfg
