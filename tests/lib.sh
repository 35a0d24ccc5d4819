# lib.sh: helpers for mpquant's shell tests (sourced). A test calls `run CMD`,
# then checks with expect_* and ends with `finish`, which prints PASSED or
# FAILED and exits accordingly.
OUT=$(mktemp)
ERR=$(mktemp)
RC=0
FAILS=0
LAST_CMD=""
trap 'rm -f "$OUT" "$ERR"' EXIT

run() {
    LAST_CMD="$*"
    "$@" >"$OUT" 2>"$ERR"
    RC=$?
}

fail() {
    echo "FAIL: $* (command: $LAST_CMD)" >&2
    echo "--- stdout:" >&2
    head -c 4000 "$OUT" >&2
    echo "--- stderr:" >&2
    head -c 4000 "$ERR" >&2
    FAILS=$((FAILS + 1))
}

expect_rc() { [ "$RC" -eq "$1" ] || fail "exit status $RC, expected $1"; }
expect_out() { grep -Eq -- "$1" "$OUT" || fail "stdout lacks /$1/"; }
expect_err() { grep -Eq -- "$1" "$ERR" || fail "stderr lacks /$1/"; }
# The pattern occurs exactly once in stdout+stderr.
expect_once() {
    local n
    n=$(cat "$OUT" "$ERR" | grep -Ec -- "$1")
    [ "$n" -eq 1 ] || fail "/$1/ occurs $n times, expected once"
}
last_json() { tail -n 1 "$OUT"; }

# Skips (exit 77) when shared data is missing, fails under CI=true.
need_shared() {
    if [ ! -r "$MPQ_SHARED_DIR/$1" ]; then
        if [ "${CI:-}" = "true" ]; then
            echo "FAILED: shared data file '$MPQ_SHARED_DIR/$1' is missing (CI=true)" >&2
            exit 1
        fi
        echo "SKIPPED: shared data file '$MPQ_SHARED_DIR/$1' is missing" >&2
        exit 77
    fi
}

. "$(dirname "${BASH_SOURCE[0]}")/h5dump_masked.sh"

# Fails unless jq (Debian package jq) is installed.
need_jq() {
    command -v jq >/dev/null || { echo "FAILED: jq missing (Debian package jq)" >&2; exit 1; }
}

# Sets dir to a new scratch directory, removed (with the captured output) at exit.
make_work_dir() {
    dir=$(mktemp -d)
    trap 'rm -rf "$dir" "$OUT" "$ERR"' EXIT
}

# bench_llama MKLLAMA HIDDEN INTER LAYERS HEADS KV_HEADS SEGMENTS SEQ_LEN:
# a Llama directory $dir/m with random weights (vocabulary 512, so that the
# stories260K tokenizer serves the evaluation) and $dir/run.cfg, the
# benchmarks' run of it: GPTQ int4 g128 on random calibration tokens, two
# documents evaluated, the checkpoint written to $dir/out.h5. Ends the test
# when the generator fails.
bench_llama() {
    run "$1" "$dir/m" --hidden "$2" --intermediate "$3" --layers "$4" --heads "$5" \
        --kv-heads "$6" --vocab 512 --context "$8"
    expect_rc 0
    [ "$FAILS" -eq 0 ] || finish
    cat >"$dir/run.cfg" <<EOF
model = { path = "$dir/m"; tokenizer = "$MPQ_SHARED_DIR/data/models/stories260K/tok512.bin"; };
calibration = { source = "random"; segments = $7; seq_len = $8; };
quant = { spec = "int:bits=4,group=128"; method = "gptq"; };
eval = { text = "$MPQ_SHARED_DIR/data/text/tinyshakespeare.txt"; docs = 2; };
output = { path = "$dir/out.h5"; overwrite = true; };
EOF
}

finish() {
    if [ "$FAILS" -eq 0 ]; then
        echo "PASSED"
        exit 0
    fi
    echo "FAILED ($FAILS checks)"
    exit 1
}

# Sets py to the python of the virtual environment DIR holding the pinned
# packages, created (python3 -m venv, Debian package python3-venv) and
# filled from PyPI with pip when missing or of other versions:
#   need_venv DIR PACKAGE==VERSION ...
need_venv() {
    local venv=$1 check
    shift
    check='import importlib.metadata as md, sys
sys.exit(any(md.version(n) != v for n, v in (a.split("==") for a in sys.argv[1:])))'
    if ! "$venv/bin/python" -c "$check" "$@" 2>/dev/null; then
        echo "installing $* into $venv" >&2
        if ! { python3 -m venv "$venv" && "$venv/bin/pip" install -q "$@" >&2; }; then
            echo "FAILED: cannot install $* into $venv" >&2
            exit 1
        fi
    fi
    py="$venv/bin/python"
}
