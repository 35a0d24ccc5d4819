#!/bin/bash
# test_faults.sh: run-time faults end a job cleanly (label robustness).
#
# Every mpquant run here goes through a wrapper that records each rank's own
# exit status (rc.<rank>), so "non-zero on every rank" is checked rank by
# rank, and through `timeout`, so a hang fails the test instead of blocking
# it. After each failing run: a clear message on stderr, no file at the
# output name and no temporary left beside it.
#  1. output directory missing           -> "directory ... does not exist"
#  2. output path is a directory          -> "it is a directory"
#  3. output directory not writable (/proc; root ignores file modes)
#  4. disk full: the output directory is a 512 KiB tmpfs, partly filled
#     beforehand so that the disk fills at different points: the checkpoint
#     at 1 and 2 ranks (no room; room for half), the Hessian statistics
#     (hessian.save, written by both ranks) and the measurements
#     (measure.save, rank 0). Each fails on every rank with a message naming
#     the file, no crash or hang (HDF5 1.10 crashes at MPI_Finalize after a
#     failed flush unless mpquant prevents it), nothing left behind. (A
#     file-size limit, ulimit -f, is not usable: it makes Open MPI's own
#     shared-memory setup fail in MPI_Init, ftruncate EFBIG, before mpquant
#     runs.) Needs root for the mount: skipped otherwise, except under
#     CI=true.
#  5. existing output without overwrite   -> refused, file unchanged
#  6. a rank killed by SIGKILL in the middle of a 2-rank run: mpirun ends
#     every rank within 60 s, non-zero, no output file, no mpquant left
#  7. an allocation failure injected on rank 1 (MPQ_FAULT_ALLOC=1:N) at
#     many N during `eval` and `inspect` at 2 ranks (mode "core") and
#     during `run` (mode "sweep-run", its own ctest test; there also a mixed
#     run with sensitivity probes, at every 40th allocation): every run either
#     succeeds or fails on both ranks with the test-allocator message
#     printed once, within the timeout; a failed run leaves no output file
#  8. input files are never modified: SHA-256 and mtime of every input
#     (shared model, tokenizer, texts) before and after the whole test.
#
#   bash test_faults.sh [core|sweep-run]     (default: core)
set -u
mode=${1:-core}
. "$MPQ_SOURCE_DIR/tests/lib.sh"
model=data/models/stories260K/stories260K.bin
tok=data/models/stories260K/tok512.bin
text=data/text/tinyshakespeare.txt
need_shared "$model"
need_shared "$tok"
need_shared "$text"
S="$MPQ_SHARED_DIR"
dir=$(mktemp -d)
trap 'umount "$dir/small" 2>/dev/null; rm -rf "$dir" "$OUT" "$ERR"' EXIT
inputs=("$S/$model" "$S/$tok" "$S/$text")
sums_before=$(sha256sum "${inputs[@]}"; stat -c '%n %Y %s' "${inputs[@]}")

cfg="$dir/q.cfg"
cat >"$cfg" <<CFG
model = { path = "$S/$model"; tokenizer = "$S/$tok"; };
calibration = { source = "random"; segments = 8; seq_len = 32; };
quant = { spec = "int:bits=4,group=32"; method = "rtn"; };
eval = { text = "$S/$text"; docs = 3; };
output = { path = "$dir/out/q.h5"; };
CFG
mkdir "$dir/out"

# The per-rank wrapper: runs mpquant, records this rank's status and exits
# 0 itself. Were it to pass the status on, mpirun would abort the job as
# soon as the first rank exited non-zero and could kill another rank's
# wrapper between its mpquant exiting and the status being written; every
# rank must end on its own (error agreement), so nothing is lost by it.
wrap="$dir/wrap.sh"
cat >"$wrap" <<'W'
#!/bin/bash
r=${OMPI_COMM_WORLD_RANK:-0}
"$MPQ_BIN" "$@"
rc=$?
echo "$rc" >"$MPQ_RC_DIR/rc.$r"
exit 0
W
chmod +x "$wrap"
export MPQ_RC_DIR="$dir/rc"

# mrun NP ARGS...: run under mpirun (NP > 1) or alone, with a time limit.
# RC becomes the first non-zero rank status (255 for a rank that wrote
# none), or 0 when every rank exited 0.
mrun() {
    local np=$1 r s
    shift
    rm -rf "$MPQ_RC_DIR"
    mkdir -p "$MPQ_RC_DIR"
    if [ "$np" -gt 1 ]; then
        run timeout -k 5 "${MRUN_LIMIT:-120}" $MPQ_MPIEXEC -n "$np" "$wrap" "$@"
    else
        run timeout -k 5 "${MRUN_LIMIT:-120}" "$wrap" "$@"
    fi
    if [ "$RC" -eq 124 ] || [ "$RC" -eq 137 ]; then
        fail "timed out (hang?)"
        return
    fi
    [ "$RC" -eq 0 ] || fail "the launcher failed ($RC) although every wrapper exits 0"
    for ((r = np - 1; r >= 0; r--)); do
        s=$(cat "$MPQ_RC_DIR/rc.$r" 2>/dev/null || echo 255)
        [ "$s" -eq 0 ] || RC=$s
    done
}
# every_rank_failed NP: each rank exited on its own with a non-zero status
# (not 128 + a signal: a crash while shutting down is a failure too).
every_rank_failed() {
    local np=$1 r s
    [ "$RC" -ne 0 ] || fail "exit status 0, expected a failure"
    for ((r = 0; r < np; r++)); do
        s=$(cat "$MPQ_RC_DIR/rc.$r" 2>/dev/null || echo missing)
        [ "$s" != missing ] && [ "$s" != 0 ] || fail "rank $r status: $s (expected non-zero)"
        [ "$s" = missing ] || [ "$s" -lt 128 ] || fail "rank $r ended by signal $((s - 128))"
    done
    ! grep -q "Segmentation fault\|Process received signal" "$ERR" || fail "a rank crashed"
}
no_output() { # path: nothing at the name, no temporary beside it
    local p=$1 d b
    d=$(dirname "$p")
    b=$(basename "$p")
    [ ! -e "$p" ] || fail "a file exists at the output name $p"
    if [ -d "$d" ]; then
        [ -z "$(find "$d" -maxdepth 1 -name ".$b.tmp.*")" ] || fail "temporary left beside $p"
    fi
}

if [ "$mode" = core ]; then
# 1. output directory missing
mrun 2 run "$cfg" -q -o output.path="$dir/missing/q.h5"
every_rank_failed 2
expect_err "$dir/missing"
expect_once "mpquant: error"
no_output "$dir/missing/q.h5"

# 2. output path is a directory
mkdir "$dir/out/adir"
mrun 2 run "$cfg" -q -o output.path="$dir/out/adir"
every_rank_failed 2
expect_err "directory"
[ -d "$dir/out/adir" ] && [ -z "$(ls -A "$dir/out/adir")" ] || fail "the directory was touched"

# 3. directory not writable (/proc refuses new files even to root)
mrun 2 run "$cfg" -q -o output.path=/proc/mpquant-q.h5
every_rank_failed 2
expect_err "/proc"
no_output /proc/mpquant-q.h5

fi

# 4. disk full: a 512 KiB tmpfs as the output directory, partly taken by a
#    filler file so that the disk fills at different points of each file.
small="$dir/small"
mkdir "$small"
mcfg="$dir/mixed.cfg" # mixed precision, for measure.save
sed -e 's/quant = { spec = "int:bits=4,group=32"; method = "rtn"; };/quant = { method = "rtn"; candidates = [ "int:bits=2,group=32", "int:bits=4,group=32" ]; };\nbudget = { avg_bits = 3.0; };/' \
    "$cfg" >"$mcfg"
# disk_full NP FREE_KIB FILE CONFIG ARGS...: FILE under $small must fail
# cleanly with FREE_KIB left on the file system.
disk_full() {
    local np=$1 free=$2 name=$3 conf=$4
    shift 4
    rm -rf "${small:?}"/* "$small"/.[!.]*
    head -c $(((512 - free) * 1024)) /dev/zero >"$small/filler"
    mrun "$np" run "$conf" -q "$@"
    LAST_CMD="($free KiB free) $LAST_CMD"
    every_rank_failed "$np"
    expect_err "$small/$name"
    expect_err "write failed|No space|no room on disk"
    expect_once "mpquant: error"
    no_output "$small/$name"
    # Only the filler and the partial checkpoint of the run (whole block
    # files and the manifest, no temporaries: it is kept for a resume).
    local left
    left=$(ls -A "$small" | grep -v -x -e filler -e "$name.partial")
    [ -z "$left" ] || fail "files left on the full file system: $left"
    if [ -d "$small/$name.partial" ]; then
        left=$(ls -A "$small/$name.partial" | grep -v -x -E 'manifest.json|(measure|round)-[0-9]{6}\.h5')
        [ -z "$left" ] || fail "the partial checkpoint holds more than whole block files: $left"
    fi
}
if [ "$mode" = core ] && mount -t tmpfs -o size=512k tmpfs "$small" 2>/dev/null; then
    # The checkpoint (~330 KB): no room at all, and room for about half.
    for np in 1 2; do
        for free in 16 180; do
            disk_full "$np" "$free" q.h5 "$cfg" -o output.path="$small/q.h5"
        done
    done
    # The Hessian statistics (~1.7 MB, written by both ranks).
    disk_full 2 512 h.h5 "$cfg" -o output.path="$dir/out/h-run.h5" -o quant.method=gptq \
        -o 'calibration.propagate="fp"' -o hessian.save="$small/h.h5"
    [ ! -e "$dir/out/h-run.h5" ] || fail "a checkpoint was written although the run failed"
    # The measurements (~10 KB, written by rank 0 at the end of measuring).
    disk_full 2 4 m.h5 "$mcfg" -o output.path="$dir/out/m-run.h5" -o measure.save="$small/m.h5"
    [ ! -e "$dir/out/m-run.h5" ] || fail "a checkpoint was written although the run failed"
    umount "$small"
elif [ "$mode" = core ]; then
    if [ "${CI:-}" = true ]; then
        fail "cannot mount a tmpfs for the disk-full case (CI=true: not skipping)"
    else
        echo "SKIPPED part: disk full (cannot mount a tmpfs; needs root)"
    fi
fi

if [ "$mode" = core ]; then
# 5. a complete run, then a second one refuses to replace its output
mrun 2 run "$cfg" -q
expect_rc 0
[ -s "$dir/out/q.h5" ] || fail "no checkpoint after a complete run"
sum=$(sha256sum "$dir/out/q.h5")
mrun 2 run "$cfg" -q
every_rank_failed 2
expect_err "already exists"
[ "$(sha256sum "$dir/out/q.h5")" = "$sum" ] || fail "the refused run changed the checkpoint"
rm -f "$dir/out/q.h5"

# 6. SIGKILL one rank of a 2-rank run in the middle (a slower config: GPTQ
#    on 64 segments of 256 tokens, learned rounding off).
slow="$dir/slow.cfg"
sed -e 's/segments = 8; seq_len = 32/segments = 64; seq_len = 256/' \
    -e 's/method = "rtn"/method = "gptq"/' -e 's/docs = 3/docs = 200/' "$cfg" >"$slow"
# Launched without the status wrapper: mpirun must see the killed rank
# itself (a wrapper shell would outlive it).
t_start=$SECONDS
timeout -k 5 90 $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$slow" -q --event-log "$dir/events.jsonl" \
    >"$OUT" 2>"$ERR" &
launcher=$!
victim=""
for _ in $(seq 1 200); do # up to 20 s for both ranks to be running a stage
    pids=$(pgrep -f -- "$MPQ_BIN run $slow" || true)
    if [ "$(echo "$pids" | grep -c .)" -ge 2 ] && grep -q stage_start "$dir/events.jsonl" 2>/dev/null; then
        victim=$(echo "$pids" | tail -n 1)
        break
    fi
    sleep 0.1
done
export LAST_CMD="mpirun -n 2 mpquant run (rank killed with SIGKILL)"
if [ -z "$victim" ]; then
    fail "the 2-rank run did not start"
else
    kill -KILL "$victim"
    wait "$launcher"
    RC=$?
    # mpirun itself reports the signal as 137; only the time tells a hang.
    [ "$RC" -ne 124 ] && [ $((SECONDS - t_start)) -lt 85 ] ||
        fail "mpirun did not end after a rank was killed (hang)"
    [ "$RC" -ne 0 ] || fail "mpirun exited 0 although a rank was killed"
    sleep 1
    left=$(pgrep -f -- "$MPQ_BIN run $slow" || true)
    [ -z "$left" ] || fail "mpquant processes left after the kill: $left"
    [ ! -e "$dir/out/q.h5" ] || fail "a killed run left a file at the output name"
fi
rm -f "$dir"/out/.q.h5.tmp.* # a killed writer may leave its temporary (documented)

# 7. allocation failures on rank 1 at many points of run / eval / inspect.
fi
fault_sweep() { # name, then the mpquant arguments
    local name=$1 n failed=0 ok=0
    shift
    for n in ${FAULT_NS:-0 1 3 10 30 60 90 100 150 200 300 1000 3000 10000 30000}; do
        rm -f "$dir/out/q.h5"
        MPQ_FAULT_ALLOC="1:$n" MRUN_LIMIT=30 mrun 2 "$@"
        LAST_CMD="MPQ_FAULT_ALLOC=1:$n $LAST_CMD"
        if [ "$RC" -eq 0 ]; then
            ok=$((ok + 1))
            continue
        fi
        failed=$((failed + 1))
        every_rank_failed 2
        expect_err "rank 1 of 2.*test allocator"
        expect_once "mpquant: error"
        no_output "$dir/out/q.h5"
    done
    echo "fault sweep $name: $failed injected failures ended cleanly, $ok runs completed"
    [ "$failed" -ge 3 ] || fail "$name: fewer than 3 injected failures took effect"
}
if [ "$mode" = core ]; then
    fault_sweep eval eval "$cfg" -q
    fault_sweep inspect inspect "$S/$model"
fi
if [ "$mode" = sweep-run ]; then
    fault_sweep run run "$cfg" -q
    # Mixed precision with full-precision propagation and sensitivity
    # probes (about 1,900 allocations on rank 1): every 40th allocation from
    # 0 to 2000 (found the hangs), or the list in FAULT_NS_MIXED.
    # Found two hangs: local steps of the probe and of taking the measured
    # codes were not agreed before the next collective.
    fcfg="$dir/mixed-fp.cfg"
    sed -e 's/quant = { spec = "int:bits=4,group=32"; method = "rtn"; };/quant = { method = "rtn"; candidates = [ "int:bits=2,group=32", "int:bits=4,group=32" ]; };\nbudget = { avg_bits = 3.0; };\nimportance = { method = "sensitivity"; samples = 4; };/' \
        -e 's/seq_len = 32;/seq_len = 32; propagate = "fp";/' "$cfg" >"$fcfg"
    FAULT_NS=${FAULT_NS_MIXED:-$(seq 0 40 2000)} fault_sweep run-mixed run "$fcfg" -q
fi

# 8. inputs unchanged
sums_after=$(sha256sum "${inputs[@]}"; stat -c '%n %Y %s' "${inputs[@]}")
[ "$sums_before" = "$sums_after" ] || fail "an input file changed during the test (checksums of the inputs)"
finish
