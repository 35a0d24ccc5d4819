#!/bin/sh
# README command 2: install dependencies, build and run the whole test suite
# (every label except the benchmarks). CI runs exactly this (.ci/run).
#
#   sh tests/run-tests.sh [extra ctest arguments, e.g. -L loading]
#
# Three passes (the robustness issue), each running ctest with one job per
# core:
#  1. Release build (build/): every test but the benchmarks, including the
#     bounded fuzzing session (robustness_fuzz, its own clang sub-build).
#  2. ASan + UBSan build (build-asan/, MPQ_SANITIZE=ON, RelWithDebInfo): the
#     same suite minus the Slurm tests (they test the batch scripts and the
#     cluster plumbing around the same program), the benchmarks, the fuzz
#     session (already sanitized), the two fault scripts (~150 short
#     mpirun launches each, 400 s under ASan, for the CI time budget; they
#     pass under ASan too), the address-space limit test (ASan reserves
#     terabytes of shadow address space, so it cannot run under ulimit -v),
#     the two quality tests on the real models
#     (run_stories, run_mixed: full-size runs of code that run_loss, run_ckpt
#     and run_measure already cover under ASan) and the two rank-identity
#     scripts (run_bitident, run_ckpt_identity: nine launches each, checking
#     arithmetic that does not change under ASan; they pass under it too),
#     run_scale (a peak-memory comparison, which ASan's shadow memory
#     and quarantine would measure instead), and mixed_ckpt_reader (about 60
#     launches, 190 s under ASan, checking file bytes that do not change
#     under it; the C code it exercises runs under ASan in mixed_ckpt_errors)
#     and models_io_hftok (about 90,000 strings compared with the tokenizers
#     library, 6 minutes under ASan; its error and allocation-failure cases
#     pass under it too), and the export checks with their Python readers
#     (mixed_gptq_export, mixed_gguf_export: 220 s and 140 s under ASan,
#     comparing file bytes; run_walkthrough writes and reads both formats
#     under ASan), run_study (the study script's bookkeeping around
#     runs that run_block_loss and the round tests cover under ASan),
#     run_pareto_rate (two sweeps' bookkeeping, whose C code
#     run_coded_budget runs under ASan), and
#     for the CI time budget robustness_special_files (about 80 launches,
#     130 s under ASan, each refused before any data is read, by the same
#     mpq_infile / mpq_outfile checks every CLI test runs under ASan on
#     regular files) and
#     mixed_ckpt_integrity (its CRC checks run under ASan in
#     mixed_ckpt_errors' test_checksums).
#     The ASan build sets MPQ_TEST_SANITIZED=1 for the tests, and run_resume,
#     mixed_ckpt_coding, run_coded_budget and run_block_loss then run a
#     subset of their repeated cases.
#     tests/lsan.supp holds the only suppressions
#     (Open MPI, libconfig internals, glibc's asprintf); the test processes
#     preload tests/lsan_keep_modules.c so that they match with the fast
#     unwinder.
#  3. valgrind memcheck (tests/valgrind-tests.sh) on the single-process C
#     tests of the Release build, minus the slow numeric ones listed there.
# MPQ_TEST_PASSES selects passes (default "release asan valgrind"); extra
# ctest arguments apply to passes 1 and 2.
# CI=true (the default here; CI=false to relax) makes a test whose shared
# data, Slurm tools or root rights are missing fail instead of skip: the full
# suite must really run.
set -eu
cd "$(dirname "$0")/.."
CI=${CI:-true}
export CI
passes=${MPQ_TEST_PASSES:-release asan valgrind}
jobs=$(nproc)
sh pipeline/install-deps.sh
status=0
for p in $passes; do
    case "$p" in
    release)
        cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
        cmake --build build -j"$(nproc)"
        # -LE bench: benchmarks are built but only run on request (ctest -L bench).
        ctest --test-dir build -LE bench -j"$jobs" --output-on-failure --timeout 900 "$@" ||
            status=1
        ;;
    asan)
        cmake -S . -B build-asan -DMPQ_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
        cmake --build build-asan -j"$(nproc)"
        ctest --test-dir build-asan -LE 'bench|slurm' -E '^(robustness_(fuzz|faults|faults_run|address_limit|special_files)|run_(stories_np2|mixed_np2|bitident|ckpt_identity|scale|study|pareto_rate)|mixed_(ckpt_reader|ckpt_integrity|gptq_export|gguf_export)|models_io_hftok)$' \
            -j"$jobs" --output-on-failure --timeout 1200 "$@" || status=1
        ;;
    valgrind)
        [ -d build ] || { cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j"$(nproc)"; }
        bash tests/valgrind-tests.sh build || status=1
        ;;
    *) echo "run-tests: unknown pass '$p' (release, asan, valgrind)" >&2; exit 2 ;;
    esac
done
exit $status
