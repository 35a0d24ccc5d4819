#!/bin/bash
# shellcheck disable=SC2317,SC2034 # functions run through trap and cl_wait look unreachable; cl_* are read by slurm_cluster.sh
#
# test_slurm_multinode.sh: slurm/quantize.sbatch as a two-node job on a
# private two-node Slurm cluster made on this machine. Two network
# namespaces joined by a veth pair (192.0.2.1 and 192.0.2.2, a
# documentation range that never leaves them) are the hosts h1 and h2:
# munged, slurmctld and slurmd h1 run in the first, slurmd h2 in the second,
# and the test itself runs inside the first (it starts itself again there).
# One job, -N 2 -n 2, launcher mpirun (Open MPI starts its daemon on h2
# through srun; the ranks talk over TCP only: btl tcp,self): on the first
# attempt a SIGUSR1 reaches a rank (test hook MPQ_TEST_SIGNAL), the ranks stop
# with status 75, the script requeues the job, and the second attempt resumes
# and ends COMPLETED 0:0 with Restarts=1. A rank ran on each host (the
# addresses the ranks saw), and the checkpoint equals a one-host 2-rank run's
# (masked h5dump).
# Needs root, iproute2 (ip), util-linux (nsenter), slurm-wlm and munge; skips
# where they are missing or the kernel refuses network namespaces, except
# under CI=true, where that fails.
set -u -o pipefail

say() { printf '[slurm multinode] %s\n' "$*"; }
fail() {
    printf '[slurm multinode] FAIL: %s\n' "$*" >&2
    exit 1
}
skip() {
    [[ ${CI:-} != true ]] || fail "$* (CI=true: this test must run)"
    say "SKIP: $*"
    exit 77
}

if [[ ${1:-} != --inside ]]; then
    [[ -n ${MPQ_BIN:-} && -n ${MPQ_SOURCE_DIR:-} ]] || fail "run through ctest (MPQ_BIN, MPQ_SOURCE_DIR)"
    [[ $(id -u) -eq 0 ]] || skip "network namespaces and the private cluster need root"
    for c in ip nsenter munged slurmctld slurmd sbatch scontrol mpirun h5dump; do
        command -v "$c" >/dev/null 2>&1 || skip "'$c' not found (pipeline/install-deps.sh)"
    done
    ns1=mpq$$s1 ns2=mpq$$s2
    trap 'ip netns del $ns1 2>/dev/null; ip netns del $ns2 2>/dev/null' EXIT
    # shellcheck source=tests/netns.sh disable=SC1091
    . "$MPQ_SOURCE_DIR/tests/netns.sh"
    why=$(netns_pair "$ns1" "$ns2" "s$$")
    case $? in
    1) skip "the kernel refuses network namespaces: $why" ;;
    2) fail "cannot set up the veth pair between the namespaces" ;;
    esac
    # nsenter, not `ip netns exec`: that one remounts /sys, which slurmd needs
    nsenter --net="/var/run/netns/$ns1" bash "$0" --inside "$ns2"
    exit $?
fi

# ---- inside h1's namespace
ns2=$2
cl_deadline=$((SECONDS + 200))
# shellcheck source=tests/driver/slurm_cluster.sh disable=SC1091
. "$MPQ_SOURCE_DIR/tests/driver/slurm_cluster.sh"
# shellcheck source=tests/h5dump_masked.sh disable=SC1091
. "$MPQ_SOURCE_DIR/tests/h5dump_masked.sh"
for f in data/models/stories260K/stories260K.bin data/text/tinyshakespeare.txt; do
    [[ -f ${MPQ_SHARED_DIR:-}/$f ]] || skip "shared data $f missing (MPQ_SHARED_DIR)"
done
while read -r v; do unset "$v"; done < <(compgen -e | grep '^SLURM_')
cl_h2=""
cleanup() {
    local rc=$?
    set +e
    if [[ $rc -ne 0 ]]; then
        cluster_logs
        tail -n 30 "$cl_tmp"/work/*.err >&2 2>/dev/null
    fi
    cl_stop_daemon slurmd-h2 "$cl_h2"
    cluster_stop
    exit $rc
}
trap cleanup EXIT
cl_tmp=$(mktemp -d /tmp/mpq-slurm-multinode.XXXXXX) || fail "mktemp failed"
chmod 755 "$cl_tmp"
mkdir -p "$cl_tmp/state" "$cl_tmp/spool" "$cl_tmp/tmpfs" "$cl_tmp/work"
dd if=/dev/urandom of="$cl_tmp/munge.key" bs=128 count=1 status=none && chmod 600 "$cl_tmp/munge.key"
munged --foreground --key-file="$cl_tmp/munge.key" --socket="$cl_tmp/munge.socket" \
    --pid-file="$cl_tmp/munged.pid" --log-file="$cl_tmp/munged.log" \
    --seed-file="$cl_tmp/munged.seed" >"$cl_tmp/munged.out" 2>&1 &
cl_munged=$!
cl_wait "munged socket" 30 test -S "$cl_tmp/munge.socket"
export SLURM_CONF=$cl_tmp/slurm.conf
# The namespaces have their own ports: fixed ones are free there.
cat >"$SLURM_CONF" <<EOF
ClusterName=mpqmulti
SlurmctldHost=$(hostname -s)(192.0.2.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$cl_tmp/munge.socket
StateSaveLocation=$cl_tmp/state
SlurmdSpoolDir=$cl_tmp/spool/%n
SlurmctldPidFile=$cl_tmp/slurmctld.pid
SlurmdPidFile=$cl_tmp/slurmd-%n.pid
SlurmctldLogFile=$cl_tmp/slurmctld.log
SlurmdLogFile=$cl_tmp/slurmd-%n.log
MailProg=/bin/true
TmpFS=$cl_tmp/tmpfs
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
SlurmdParameters=config_overrides
NodeName=h1 NodeAddr=192.0.2.1 CPUs=1 RealMemory=2000 State=UNKNOWN
NodeName=h2 NodeAddr=192.0.2.2 CPUs=1 RealMemory=2000 State=UNKNOWN
PartitionName=mpqmulti Nodes=h1,h2 Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -D -i >"$cl_tmp/slurmctld.out" 2>&1 &
cl_ctld=$!
slurmd -D -N h1 >"$cl_tmp/slurmd-h1.out" 2>&1 &
cl_slurmd=$!
nsenter --net="/var/run/netns/$ns2" slurmd -D -N h2 >"$cl_tmp/slurmd-h2.out" 2>&1 &
cl_h2=$!
both_idle() { [[ $(sinfo -h -o '%T %D' 2>/dev/null) == "idle 2" ]]; }
cl_wait "nodes h1 and h2 idle" 40 both_idle
say "cluster up: $(sinfo -h -o '%P %T %N' | tr '\n' ' ')"

# The one-host reference: 2 ranks on h1 alone.
cfg=$MPQ_SOURCE_DIR/configs/stories260K-w4.cfg
args=(-o calibration.segments=16 -o calibration.seq_len=128 -o eval.docs=20
    -o output.path="$cl_tmp/work/q.h5")
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun --oversubscribe -n 2 "$MPQ_BIN" run "$cfg" "${args[@]}" -q >/dev/null 2>"$cl_tmp/ref.err" ||
    fail "the one-host reference run failed: $(tail -3 "$cl_tmp/ref.err")"
masked_h5dump "$cl_tmp/work/q.h5" >"$cl_tmp/one.txt"
rm -f "$cl_tmp/work/q.h5"

# Each rank notes the address it sees; the first attempt gets a SIGUSR1.
cat >"$cl_tmp/rank" <<EOF
#!/bin/bash
ip -o -4 addr show | grep -o '192\.0\.2\.[12]' >>"$cl_tmp/work/where"
if [[ \${SLURM_RESTART_COUNT:-0} == 0 ]]; then export MPQ_TEST_SIGNAL=1; fi
exec "$MPQ_BIN" "\$@"
EOF
chmod 755 "$cl_tmp/rank"
job=$(cd "$cl_tmp/work" && MPQ_BIN=$cl_tmp/rank MPQ_LAUNCHER=mpirun OMPI_MCA_btl=tcp,self \
    OMPI_MCA_btl_tcp_if_include=192.0.2.0/24 OMPI_MCA_oob_tcp_if_include=192.0.2.0/24 \
    sbatch --parsable -N 2 -n 2 --mem-per-cpu=500M --time=00:05:00 \
    --signal=B:USR1@30 "$MPQ_SOURCE_DIR/slurm/quantize.sbatch" "$cfg" "${args[@]}") ||
    fail "sbatch failed: $job"
cl_jobs+=("$job")
say "job $job: 2 nodes, stopped after block 2, requeued, resumed"
requeued() { scontrol show job -o "$job" | grep -q 'JobState=PENDING.*Restarts=1'; }
cl_wait "job $job to be requeued" 60 requeued
# eligible 10 s after the requeue, not Slurm's two minutes
scontrol update JobId="$job" StartTime=now+10 || fail "cannot make the requeued job eligible"
cl_wait "job $job to finish" 90 cl_job_done "$job"
state=$(cl_job_state "$job") code=$(cl_job_exit "$job")
[[ $state == COMPLETED && $code == 0:0 ]] || fail "job $job ended $state $code, expected COMPLETED 0:0"
err=$cl_tmp/work/mpquant-$job.err
grep -q 'on h\[1-2\]: 2 task(s)' "$err" || fail "job $job did not run on h1 and h2"
grep -q "requeued job $job" "$err" || fail "job $job was not requeued by the script"
grep -q 'round: resuming after block 2 of 5' "$err" || fail "job $job did not resume"
for a in 192.0.2.1 192.0.2.2; do
    grep -qx "$a" "$cl_tmp/work/where" || fail "no rank ran on the host with address $a"
done
masked_h5dump "$cl_tmp/work/q.h5" >"$cl_tmp/two.txt"
cmp -s "$cl_tmp/one.txt" "$cl_tmp/two.txt" ||
    fail "the two-node checkpoint differs from the one-host one: $(diff "$cl_tmp/one.txt" "$cl_tmp/two.txt" | head -c 600)"
say "PASS: two-node job stopped, requeued, resumed to the one-host checkpoint in $SECONDS s"
