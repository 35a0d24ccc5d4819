#!/bin/bash
# Error agreement: an allocation failure injected on ONE rank
# (MPQ_FAULT_ALLOC=RANK:N) must end EVERY rank with a non-zero status, within
# seconds, with the message printed once and naming the rank that failed.
# Each rank runs under a small wrapper that records its own exit status, so
# that mpirun's own abort handling cannot hide a rank that exited 0 or hung.
set -u
. "$(dirname "$0")/../lib.sh"

CFG="$MPQ_SOURCE_DIR/configs/default.cfg"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

# The wrapper: run mpquant, append "rank status" to $STATUS, exit 0.
cat > "$T/wrap.sh" <<'WRAP'
#!/bin/sh
"$@"
rc=$?
echo "${OMPI_COMM_WORLD_RANK:-0} $rc" >> "$STATUS"
exit 0
WRAP
chmod +x "$T/wrap.sh"

check_case() { # np fault_rank fault_after
    local np=$1 frank=$2 after=$3
    export STATUS="$T/status-$np-$frank-$after"
    rm -f "$STATUS"
    local t0 t1
    t0=$(date +%s)
    run timeout 60 env MPQ_FAULT_ALLOC="$frank:$after" \
        $MPQ_MPIEXEC -np "$np" "$T/wrap.sh" "$MPQ_BIN" check --no-paths "$CFG"
    t1=$(date +%s)
    [ "$RC" -ne 124 ] || fail "np=$np fault on rank $frank: timed out (hang)"
    [ $((t1 - t0)) -le 30 ] || fail "np=$np: took $((t1 - t0)) s"
    local n
    n=$(wc -l < "$STATUS" 2>/dev/null || echo 0)
    [ "$n" -eq "$np" ] || fail "np=$np: $n of $np ranks reported an exit status"
    if grep -q ' 0$' "$STATUS" 2>/dev/null; then
        fail "np=$np fault on rank $frank: a rank exited 0: $(tr '\n' ' ' < "$STATUS")"
    fi
    expect_once "mpquant: error \(rank $frank of $np\): out of memory allocating [0-9]+ x [0-9]+ bytes \(test allocator: an injected failure"
}

for np in 2 4; do
    check_case "$np" 1 0           # rank 1 fails on its first allocation
    check_case "$np" $((np - 1)) 3 # the last rank fails a bit later
    check_case "$np" 0 2           # the root fails
done

# Without a fault every rank exits 0.
export STATUS="$T/status-ok"
run timeout 60 $MPQ_MPIEXEC -np 4 "$T/wrap.sh" "$MPQ_BIN" check --no-paths "$CFG"
expect_rc 0
[ "$(grep -c ' 0$' "$STATUS")" -eq 4 ] || fail "not every rank exited 0 without a fault"

finish
