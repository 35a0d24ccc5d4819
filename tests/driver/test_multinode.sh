#!/bin/bash
# test_multinode.sh: `mpquant run` on two hosts. Two network namespaces
# joined by a veth pair (192.0.2.1 and 192.0.2.2, a documentation range that
# never leaves them), each with its own hostname (h1, h2); mpirun starts in
# h1 and reaches h2 through an rsh agent that enters h2's namespace, so the
# ranks talk over TCP only (btl tcp,self: no shared memory between them).
# Checks: the ranks run on h1 and h2; the 2-host checkpoint equals the
# 1-host one (masked h5dump); a 2-host run killed after block 1 resumes on
# one host at 1 rank to the same checkpoint (the partial checkpoint lives
# on the file system both hosts share).
# Needs root, ip (iproute2) and unshare; skips where the kernel refuses
# network namespaces, except under CI=true, where that fails.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/stories260K/stories260K.bin
need_shared data/text/tinyshakespeare.txt
command -v h5dump >/dev/null || { echo "FAILED: h5dump missing (Debian package hdf5-tools)"; exit 1; }
skip_or_fail() {
    if [ "${CI:-}" = true ]; then
        echo "FAILED: $* (CI=true: this test must run)" >&2
        exit 1
    fi
    echo "SKIPPED: $*" >&2
    exit 77
}
[ "$(id -u)" -eq 0 ] || skip_or_fail "network namespaces need root"
for c in ip unshare mpirun; do
    command -v $c >/dev/null || skip_or_fail "'$c' not found (Debian packages iproute2, util-linux, openmpi-bin)"
done
make_work_dir
ns1=mpq$$h1 ns2=mpq$$h2
trap 'ip netns del $ns1 2>/dev/null; ip netns del $ns2 2>/dev/null; rm -rf "$dir" "$OUT" "$ERR"' EXIT
. "$MPQ_SOURCE_DIR/tests/netns.sh"
why=$(netns_pair "$ns1" "$ns2" "v$$")
case $? in
1) skip_or_fail "the kernel refuses network namespaces: $why" ;;
2) skip_or_fail "cannot set up the veth pair between the namespaces" ;;
esac

# The rsh agent: `agent HOST COMMAND...` runs COMMAND on HOST, as ssh would.
cat >"$dir/agent" <<AGENT
#!/bin/bash
host=\$1
shift
case \$host in
h1) ns=$ns1 ;;
h2) ns=$ns2 ;;
*) echo "agent: unknown host \$host" >&2; exit 1 ;;
esac
exec ip netns exec "\$ns" unshare --uts bash -c "hostname \$host; \$*"
AGENT
chmod 755 "$dir/agent"
# on2 CMD...: CMD under mpirun with one rank on each host
on2() {
    run ip netns exec "$ns1" unshare --uts bash -c 'hostname h1; exec "$@"' on2 \
        env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
        mpirun -H h1:1,h2:1 -n 2 --mca plm_rsh_agent "$dir/agent" --mca btl tcp,self \
        --mca btl_tcp_if_include 192.0.2.0/24 --mca oob_tcp_if_include 192.0.2.0/24 "$@"
}
on2 hostname
expect_rc 0
[ "$(sort "$OUT" | tr '\n' ' ')" = "h1 h2 " ] || fail "the ranks did not run on h1 and h2: $(tr '\n' ' ' <"$OUT")"

cfg="$MPQ_SOURCE_DIR/configs/stories260K-w4.cfg"
small=(-o calibration.segments=16 -o calibration.seq_len=128 -o eval.docs=20 -o output.path="$dir/out.h5")
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$cfg" "${small[@]}"
expect_rc 0
masked_h5dump "$dir/out.h5" >"$dir/one.txt"
rm -f "$dir/out.h5"
on2 "$MPQ_BIN" run "$cfg" "${small[@]}" --log-all-ranks
expect_rc 0
expect_err '^\[1/2\] .*checkpoint written'
masked_h5dump "$dir/out.h5" >"$dir/two.txt"
diff "$dir/one.txt" "$dir/two.txt" >"$dir/diff" ||
    fail "the 2-host checkpoint differs from the 1-host one: $(head -c 600 "$dir/diff")"
rm -f "$dir/out.h5"

on2 env MPQ_TEST_KILL_AT=round:1:saved "$MPQ_BIN" run "$cfg" "${small[@]}"
[ "$RC" -ne 0 ] || fail "the 2-host run killed after block 1 exited 0"
[ -f "$dir/out.h5.partial/round-000001.h5" ] || fail "no block files after the 2-host kill"
run "$MPQ_BIN" run "$cfg" "${small[@]}"
expect_rc 0
expect_err "round: resuming after block 2 of 5"
masked_h5dump "$dir/out.h5" >"$dir/resumed.txt"
diff "$dir/one.txt" "$dir/resumed.txt" >"$dir/diff" ||
    fail "killed on 2 hosts, resumed on 1: the checkpoint differs: $(head -c 600 "$dir/diff")"
finish
