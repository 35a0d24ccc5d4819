#!/bin/bash
# test_special_files.sh: special files in place of inputs and outputs
# (label robustness). Every case runs under `timeout`, so a hang fails the
# test instead of blocking it, and at 2 ranks where ranks could disagree.
#  1. An output path naming a character device, a FIFO or a socket is
#     refused and the special file is left as it was (same type, same
#     device numbers): output.path with overwrite, hessian.save,
#     measure.save, log.event_log, --event-log, export --output --overwrite.
#     The character device is a private copy of /dev/null (mknod in the
#     scratch directory), so a regression cannot harm the system's own.
#  2. The event log is never an input or another output: --event-log and
#     log.event_log naming the model, the tokenizer, the configuration file,
#     output.path, an `inspect` or `export` argument are refused, and the
#     inputs are unchanged (SHA-256).
#  3. A FIFO as any input (configuration file, model.path, model.tokenizer,
#     calibration.text, calibration.images, eval.text, eval.reference,
#     hessian.load, measure.load, `inspect`, `export`, `eval --text`) fails
#     on every rank within the time limit, naming the file and saying it is
#     a FIFO; nothing is written.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
model=data/models/stories260K/stories260K.bin
tok=data/models/stories260K/tok512.bin
text=data/text/tinyshakespeare.txt
need_shared "$model"
need_shared "$tok"
need_shared "$text"
S="$MPQ_SHARED_DIR"
make_work_dir
cd "$dir" || exit 1

cp "$S/$model" m.bin
cp "$S/$tok" t.bin
cat >q.cfg <<CFG
model = { path = "$dir/m.bin"; tokenizer = "$dir/t.bin"; };
calibration = { source = "random"; segments = 4; seq_len = 16; };
quant = { spec = "int:bits=4,group=32"; method = "rtn"; };
eval = { text = "$S/$text"; docs = 2; };
CFG
# A checkpoint for the export and eval cases.
run "$MPQ_BIN" run q.cfg -q -o output.path="$dir/ck.h5"
expect_rc 0
inputs=(m.bin t.bin q.cfg ck.h5)
sums_before=$(sha256sum "${inputs[@]}")

# The special files: a character device (root only), a FIFO, a socket.
specials=()
if mknod null c 1 3 2>/dev/null; then
    specials+=(null)
elif [ "${CI:-}" = "true" ]; then
    fail "mknod of a character device failed (CI=true runs as root)"
fi
mkfifo fifo && specials+=(fifo)
python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' sock &&
    specials+=(sock)
kind() { stat -c '%F %t:%T' "$1"; }

# trun NP ARGS...: mpquant at NP ranks (1: no launcher) under a time limit.
trun() {
    local np=$1
    shift
    if [ "$np" -eq 1 ]; then
        run timeout -k 5 30 "$MPQ_BIN" "$@"
    else
        # shellcheck disable=SC2086
        run timeout -k 5 60 $MPQ_MPIEXEC -n "$np" "$MPQ_BIN" "$@"
    fi
}
# expect_refused PATTERN: a clean failure (not a time-out) with the message.
expect_refused() {
    [ "$RC" -ne 0 ] || fail "exit status 0, expected a refusal"
    [ "$RC" -ne 124 ] && [ "$RC" -ne 137 ] || fail "timed out (exit $RC)"
    expect_err "$1"
}

# ---- 1. outputs onto special files
for sp in "${specials[@]}"; do
    before=$(kind "$sp")
    p="$dir/$sp"
    trun 2 run q.cfg -q -o output.path="$p" -o output.overwrite=true
    expect_refused "'$p' is (a character device|a FIFO|a socket)"
    trun 1 run q.cfg -q -o hessian.save="$p" -o calibration.propagate=fp
    expect_refused "'$p' is (a character device|a FIFO|a socket)"
    trun 1 run q.cfg -q -o measure.save="$p" -o quant.candidates=int:bits=2,int:bits=4 \
        -o budget.avg_bits=3
    expect_refused "'$p' is (a character device|a FIFO|a socket)"
    trun 2 check q.cfg -q -o log.event_log="$p"
    expect_refused "'$p' is (a character device|a FIFO|a socket)"
    trun 1 check q.cfg -q --event-log "$p"
    expect_refused "event log '$p' is (a character device|a FIFO|a socket)"
    trun 1 inspect m.bin --event-log "$p"
    expect_refused "event log '$p' is (a character device|a FIFO|a socket)"
    trun 1 export ck.h5 --format safetensors --output "$p" --overwrite --no-config
    expect_refused "(output '$p' is|cannot write output '$p': it is) (a character device|a FIFO|a socket)"
    [ "$(kind "$sp")" = "$before" ] || fail "$sp was replaced: $(kind "$sp"), was $before"
done
ls -A | grep -q '\.tmp\.' && fail "temporary files left: $(ls -A | grep '\.tmp\.')"

# ---- 2. the event log is never an input or another output
for f in m.bin t.bin q.cfg; do
    trun 2 run q.cfg -q --event-log "$f"
    expect_refused "'$f' is the same file as"
    trun 1 run q.cfg -q -o log.event_log="$dir/$f"
    expect_refused "is the same file as"
done
trun 1 run q.cfg -q -o output.path="$dir/o.h5" -o log.event_log="$dir/o.h5"
expect_refused "is the same file as output.path"
trun 1 inspect ck.h5 --event-log ck.h5
expect_refused "'ck.h5' is the same file as 'ck.h5' named on the command line"
trun 1 export ck.h5 --format safetensors --output e.safetensors --event-log ck.h5
expect_refused "is the same file as 'ck.h5' named on the command line"
[ -e o.h5 ] && fail "o.h5 written although the run was refused"
[ -e e.safetensors ] && fail "e.safetensors written although the export was refused"
[ "$(sha256sum "${inputs[@]}")" = "$sums_before" ] || fail "an input changed"

# ---- 3. a FIFO as an input fails at once on every rank
rm -f fifo
mkfifo fifo
F="$dir/fifo"
fifo_case() { # NP ARGS...
    trun "$@"
    expect_refused "fifo('|:|; | is)"
    expect_err "FIFO"
}
fifo_case 2 check fifo
fifo_case 2 run fifo
fifo_case 2 run q.cfg -q -o model.path="$F"
fifo_case 2 run q.cfg -q -o model.tokenizer="$F"
fifo_case 1 run q.cfg -q -o calibration.source=text -o calibration.text="$F"
fifo_case 1 run q.cfg -q -o calibration.source=images -o calibration.images="$F"
fifo_case 2 run q.cfg -q -o eval.text="$F"
fifo_case 1 run q.cfg -q -o hessian.load="$F" -o calibration.propagate=fp
fifo_case 1 run q.cfg -q -o measure.load="$F" -o quant.candidates=int:bits=2,int:bits=4 \
    -o budget.avg_bits=3
fifo_case 1 eval q.cfg -q -o eval.reference="$F"
fifo_case 2 eval --model m.bin --tokenizer t.bin --text fifo --docs 1
fifo_case 2 inspect fifo
fifo_case 1 inspect fifo --format=tokenizer
fifo_case 1 inspect fifo --format=idx
fifo_case 2 export fifo --format safetensors --output x.safetensors
[ -e x.safetensors ] && fail "x.safetensors written from a FIFO"
[ "$(sha256sum "${inputs[@]}")" = "$sums_before" ] || fail "an input changed"
finish
