#!/bin/bash
# run-fuzz.sh: builds mpquant's libFuzzer targets with clang (ASan + UBSan +
# libFuzzer coverage, in its own build directory) and fuzzes each reader for
# a bounded time from its committed seed corpus plus seeds derived at run
# time from the shared models and data.
#
#   bash tests/fuzz/run-fuzz.sh [--build DIR] [--seconds N] [--jobs N] [TARGET...]
#
# TARGET: llama2c tokenizer safetensors sharded idx ckpt config (default: all).
# Prints one JSON line per target ({"target", "seconds", "execs", "corpus",
# "crash"}). Exit 0 when no target crashed; 1 when one did: the reproducer is
# kept under DIR/artifacts/ and the message says how to turn it into a
# regression test (copy it to tests/fuzz/regressions/TARGET/). Exit 77
# (ctest: skipped) when clang or libFuzzer is missing, except under CI=true.
set -u
src=$(cd "$(dirname "$0")/../.." && pwd)
build="$src/build-fuzz"
seconds=15
jobs=2
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
    --build) build=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    -h | --help) sed -n 2,15p "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=(llama2c tokenizer safetensors sharded idx ckpt config)

skip() {
    if [ "${CI:-}" = true ]; then
        echo "run-fuzz: $1 (CI=true: failing instead of skipping)" >&2
        exit 1
    fi
    echo "run-fuzz: skipped: $1" >&2
    exit 77
}
command -v clang >/dev/null || skip "clang not found (Debian package 'clang')"
rt=$(clang -print-file-name=libclang_rt.fuzzer-x86_64.a 2>/dev/null)
if [ ! -f "$rt" ] && ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a >/dev/null 2>&1; then
    skip "libFuzzer runtime not found (Debian package 'libclang-rt-14-dev', pulled in by 'clang')"
fi

# ---- build (incremental; only the fuzz targets)
flags="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1"
cfg=(-S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DMPQ_FUZZ=ON -DCMAKE_C_COMPILER=clang
     "-DCMAKE_C_FLAGS=$flags" "-DCMAKE_C_FLAGS_RELEASE=")
[ -n "${MPQ_SHARED_DIR:-}" ] && cfg+=("-DMPQ_SHARED_DIR=$MPQ_SHARED_DIR")
t0=$(date +%s)
if ! cmake "${cfg[@]}" >"$build.configure.log" 2>&1; then
    cat "$build.configure.log" >&2
    echo "run-fuzz: configuring $build with clang failed" >&2
    exit 1
fi
mk=mpq_fuzz_all
[ ${#targets[@]} -eq 1 ] && mk="fuzz_${targets[0]}"
if ! cmake --build "$build" -j"$(nproc)" --target "$mk" >"$build.build.log" 2>&1; then
    tail -50 "$build.build.log" >&2
    echo "run-fuzz: building the fuzz targets failed" >&2
    exit 1
fi
echo "run-fuzz: built ${#targets[@]} targets in $(($(date +%s) - t0)) s" >&2

# ---- seeds
work=$(mktemp -d "${TMPDIR:-/tmp}/mpq-fuzzrun.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$build/artifacts"
shared="${MPQ_SHARED_DIR:-$src/../shared}"
derive_seeds() { # target dir: run-time seeds from the shared data (never committed)
    local t=$1 d=$2 m="$shared/data"
    case "$t" in
    llama2c) [ -f "$m/models/stories260K/stories260K.bin" ] &&
        head -c 4096 "$m/models/stories260K/stories260K.bin" >"$d/shared-stories-head" ;;
    safetensors) [ -f "$m/models/mnist-cnn-small/model-mnist.safetensors" ] &&
        head -c 8192 "$m/models/mnist-cnn-small/model-mnist.safetensors" >"$d/shared-mnist-head" ;;
    idx) [ -f "$m/mnist/t10k-labels-idx1-ubyte" ] &&
        head -c 1024 "$m/mnist/t10k-labels-idx1-ubyte" >"$d/shared-labels-head"
        [ -f "$m/mnist/t10k-images-idx3-ubyte" ] &&
        head -c 4096 "$m/mnist/t10k-images-idx3-ubyte" >"$d/shared-images-head" ;;
    tokenizer) [ -f "$m/models/stories260K/tok512.bin" ] &&
        { printf '\0'; head -c 3000 "$m/models/stories260K/tok512.bin"; } >"$d/shared-tok-head" ;;
    esac
    return 0
}

# ---- fuzz: at most $jobs targets at a time
declare -A maxlen=([llama2c]=8192 [tokenizer]=8192 [safetensors]=16384 [sharded]=16384
                   [idx]=8192 [ckpt]=4096 [config]=4096)
fuzz_one() {
    local t=$1 c="$work/corpus-$t" s="$work/seeds-$t"
    mkdir -p "$c" "$s"
    [ -d "$src/tests/fuzz/corpus/$t" ] && cp "$src/tests/fuzz/corpus/$t"/* "$s"/ 2>/dev/null
    [ -d "$src/tests/fuzz/regressions/$t" ] && cp "$src/tests/fuzz/regressions/$t"/* "$s"/ 2>/dev/null
    derive_seeds "$t" "$s"
    ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:symbolize=1" \
    LSAN_OPTIONS="suppressions=$src/tests/lsan.supp:print_suppressions=0" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
        "$build/tests/fuzz/fuzz_$t" "$c" "$s" -max_total_time="$seconds" -timeout=10 \
        -rss_limit_mb=2048 -max_len="${maxlen[$t]}" -print_final_stats=1 \
        -artifact_prefix="$build/artifacts/$t-" >"$work/log-$t" 2>&1
    echo $? >"$work/rc-$t"
}
running=0
for t in "${targets[@]}"; do
    fuzz_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait

status=0
for t in "${targets[@]}"; do
    rc=$(cat "$work/rc-$t" 2>/dev/null || echo 99)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log-$t" | tail -1)
    ncorp=$(find "$work/corpus-$t" -type f | wc -l)
    crash=false
    if [ "$rc" != 0 ]; then
        crash=true
        status=1
        echo "run-fuzz: target $t FAILED (exit $rc); last lines of its log:" >&2
        tail -60 "$work/log-$t" >&2
        art=$(grep -o "Test unit written to [^ ]*" "$work/log-$t" | tail -1 | sed 's/.* //')
        if [ -n "$art" ]; then
            echo "run-fuzz: reproducer: $art" >&2
            echo "run-fuzz: make it a regression test: cp '$art' '$src/tests/fuzz/regressions/$t/'" >&2
        fi
    fi
    printf '{"target": "%s", "seconds": %s, "execs": %s, "corpus": %s, "crash": %s}\n' \
        "$t" "$seconds" "${execs:-0}" "$ncorp" "$crash"
done
exit $status
