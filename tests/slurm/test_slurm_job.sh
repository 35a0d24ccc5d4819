#!/bin/bash
# shellcheck disable=SC2317 # functions run through trap and wait_until look unreachable
#
# test_slurm_job.sh: runs slurm/quantize.sbatch on a private one-node Slurm
# cluster that this script starts, and stops again, itself.
#
# As root: munged with a fresh key, slurmctld and slurmd with a generated
# slurm.conf, all in a temporary directory, on free non-default ports, in the
# foreground (so their pids are the ones this script holds); every Slurm
# command and daemon finds the configuration through SLURM_CONF. Then five
# jobs on 2 tasks:
#   1. default launcher (srun --mpi=pmix) and default command: the full
#      pipeline, `mpquant run` (mixed precision on stories260K, small
#      calibration): state COMPLETED, ExitCode 0:0, the JSON result line of
#      `run` with the quantized figures and bits per weight, the checkpoint
#      written (an HDF5 file), ranks [0/2] and [1/2] both logged (jobs 2 and
#      4 run the quick `mpquant check`: MPQ_COMMAND=check);
#   2. MPQ_LAUNCHER=mpirun with a binary that holds until released: SIGUSR1 to
#      the batch shell (what --signal=B:USR1@600 sends) is logged and the job
#      still ends COMPLETED 0:0 with both ranks;
#   3. a configuration that does not exist: state FAILED, ExitCode 2:0, the
#      error names the file;
#   5. (submitted second) the run of job 1 with a SIGUSR1 reaching a rank
#      during block 1 of the measuring pass on the first attempt: the job
#      stops with status 75, requeues itself, resumes after block 2 and
#      ends COMPLETED 0:0 with Restarts=1 and the same checkpoint as job 1;
#   4. a step whose tasks fail to launch (provoked: the PMIx app directory of
#      the job exists already), where srun itself exits 0: the script sees no
#      rank markers and the job ends FAILED with ExitCode 1:0.
# Exactly the daemons it started are stopped (by pid) and the temporary
# directory removed on every exit path. Every wait is bounded; the whole test
# stays within MPQ_SLURM_TEST_BUDGET seconds (default 240).
#
# Environment: MPQ_BIN, MPQ_SOURCE_DIR (set by ctest); MPQ_KEEP_TMP=1 keeps
# the temporary directory. Exit 0 pass, 1 fail, 77 skip (never under CI=true).
set -u -o pipefail

budget=${MPQ_SLURM_TEST_BUDGET:-240}
deadline=$((SECONDS + budget))

say() { printf '[slurm test] %s\n' "$*"; }
fail() {
    printf '[slurm test] FAIL: %s\n' "$*" >&2
    exit 1
}
skip() {
    if [[ ${CI:-} == true ]]; then
        fail "$* (CI=true: this test must not be skipped)"
    fi
    say "SKIP: $*"
    exit 77
}

[[ -n ${MPQ_BIN:-} && -x ${MPQ_BIN:-} ]] || fail "MPQ_BIN='${MPQ_BIN:-}' is not an executable (run through ctest)"
[[ -n ${MPQ_SOURCE_DIR:-} ]] || fail "MPQ_SOURCE_DIR is not set (run through ctest)"
sbatch_script=$MPQ_SOURCE_DIR/slurm/quantize.sbatch
[[ -f $sbatch_script ]] || fail "$sbatch_script not found"

for c in munged slurmctld slurmd sbatch scontrol sinfo scancel srun mpirun; do
    command -v "$c" >/dev/null 2>&1 ||
        skip "'$c' not found: install the Debian packages slurm-wlm, munge and openmpi-bin (pipeline/install-deps.sh)"
done
[[ $(id -u) -eq 0 ]] || skip "the private Slurm cluster needs root (slurmd starts jobs as their user)"

# Slurm variables of an enclosing job would mix with the private cluster's.
while read -r v; do
    unset "$v"
done < <(compgen -e | grep '^SLURM_')

# The munge socket's directory must be searchable by all (munged checks);
# /tmp keeps the socket path well under the 108-byte limit of unix sockets.
tmp=$(mktemp -d /tmp/mpq-slurm-test.XXXXXX) || fail "mktemp failed"
chmod 755 "$tmp"
mkdir -p "$tmp/state" "$tmp/spool" "$tmp/work" "$tmp/tmpfs" "$tmp/jobtmp"
work=$tmp/work

munged_pid=""
slurmctld_pid=""
slurmd_pid=""
jobs_submitted=()

print_logs() {
    local f
    for f in "$tmp"/munged.out "$tmp"/slurmctld.out "$tmp"/slurmctld.log "$tmp"/slurmd.out \
        "$tmp"/slurmd.log "$tmp"/slurm.conf "$work"/*.out "$work"/*.err; do
        [[ -s $f ]] || continue
        printf '\n----- %s (last 60 lines) -----\n' "$f" >&2
        tail -n 60 "$f" >&2
    done
}

job_state() { # JOBID -> JobState (empty if unknown)
    scontrol show job -o "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2
}

job_exit_code() { # JOBID -> ExitCode (e.g. 0:0)
    scontrol show job -o "$1" 2>/dev/null | grep -o ' ExitCode=[0-9:]*' | cut -d= -f2
}

is_final_state() {
    case $1 in
    COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | PREEMPTED | BOOT_FAIL | DEADLINE)
        return 0
        ;;
    esac
    return 1
}

# stop_daemon NAME PID: SIGTERM, up to 15 s to exit, then SIGKILL.
stop_daemon() {
    local name=$1 pid=$2 i
    [[ -n $pid ]] || return 0
    kill -0 "$pid" 2>/dev/null || {
        wait "$pid" 2>/dev/null
        return 0
    }
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name (pid $pid) ignored SIGTERM for 15 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
}

cleanup() {
    local rc=$? id i
    set +e
    trap - EXIT INT TERM
    # Jobs still running would leave slurmstepd processes behind slurmd.
    if [[ -n $slurmctld_pid ]]; then
        for id in "${jobs_submitted[@]}"; do
            if ! is_final_state "$(job_state "$id")"; then
                scancel "$id" 2>/dev/null
                for ((i = 0; i < 100; i++)); do
                    is_final_state "$(job_state "$id")" && break
                    sleep 0.2
                done
            fi
        done
    fi
    if [[ $rc -ne 0 && $rc -ne 77 ]]; then
        print_logs
    fi
    stop_daemon slurmd "$slurmd_pid"
    stop_daemon slurmctld "$slurmctld_pid"
    stop_daemon munged "$munged_pid"
    if [[ ${MPQ_KEEP_TMP:-0} == 1 ]]; then
        say "kept $tmp"
    else
        rm -rf "$tmp"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_until DESCRIPTION MAX_SECONDS COMMAND...: polls COMMAND every 0.2 s
# until it succeeds; fails after MAX_SECONDS or when the test budget is spent.
# Also fails at once if one of the daemons died.
wait_until() {
    local what=$1 max=$2 end
    shift 2
    end=$((SECONDS + max))
    ((end > deadline)) && end=$deadline
    while ! "$@"; do
        [[ -z $munged_pid ]] || kill -0 "$munged_pid" 2>/dev/null ||
            fail "munged (pid $munged_pid) died while waiting for: $what"
        [[ -z $slurmctld_pid ]] || kill -0 "$slurmctld_pid" 2>/dev/null ||
            fail "slurmctld (pid $slurmctld_pid) died while waiting for: $what"
        [[ -z $slurmd_pid ]] || kill -0 "$slurmd_pid" 2>/dev/null ||
            fail "slurmd (pid $slurmd_pid) died while waiting for: $what"
        ((SECONDS < end)) || fail "timed out after ${max} s (or the ${budget} s test budget) waiting for: $what"
        sleep 0.2
    done
}

# port_free PORT: no TCP socket (any state, IPv4 or IPv6) uses it locally.
port_free() {
    local hex
    hex=$(printf '%04X' "$1")
    ! awk -v p="$hex" 'FNR > 1 { split($2, a, ":"); if (a[2] == p) found = 1 } END { exit !found }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

ctld_port=""
for ((try = 0; try < 50; try++)); do
    p=$((20000 + RANDOM % 30000))
    if port_free "$p" && port_free $((p + 1)); then
        ctld_port=$p
        break
    fi
done
[[ -n $ctld_port ]] || fail "no two free consecutive TCP ports found in 20000-50000"
slurmd_port=$((ctld_port + 1))

# ---- munge
key=$tmp/munge.key
if command -v mungekey >/dev/null 2>&1; then
    mungekey --create --bits=1024 --keyfile="$key" >/dev/null 2>&1 || fail "mungekey could not create $key"
else
    dd if=/dev/urandom of="$key" bs=128 count=1 status=none || fail "cannot write $key"
fi
chmod 600 "$key"
munge_socket=$tmp/munge.socket
munged --foreground --key-file="$key" --socket="$munge_socket" --pid-file="$tmp/munged.pid" \
    --log-file="$tmp/munged.log" --seed-file="$tmp/munged.seed" >"$tmp/munged.out" 2>&1 &
munged_pid=$!
wait_until "munged to create its socket $munge_socket" 30 test -S "$munge_socket"
say "munged pid $munged_pid, socket $munge_socket"

# ---- slurm.conf
node=$(hostname -s)
ncpu=$(nproc)
((ncpu < 2)) && ncpu=2
mem_mb=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
[[ -n $mem_mb && $mem_mb -gt 0 ]] || mem_mb=1024
first_job_id=$((1000 + RANDOM * 30))
export SLURM_CONF=$tmp/slurm.conf
cat >"$SLURM_CONF" <<EOF
# Generated by tests/slurm/test_slurm_job.sh: a private one-node cluster.
ClusterName=mpqtest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$munge_socket
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
# Slurm's PMIx plugin makes spmix_appdir_<uid>_<job>.<step> under TmpFS: keep
# it private, and start job ids at a random number, so that two test runs at
# once (or leftovers of a killed run) cannot collide.
TmpFS=$tmp/tmpfs
FirstJobId=$first_job_id
# No cgroups (containers): plain process tracking, no task binding.
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
# The node as written here, even where the hardware differs (1-CPU machines).
SlurmdParameters=config_overrides
NodeName=$node NodeAddr=127.0.0.1 CPUs=$ncpu RealMemory=$mem_mb State=UNKNOWN
PartitionName=mpqtest Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF

# ---- slurmctld, slurmd (foreground: -D; the pids are theirs)
slurmctld -D -i >"$tmp/slurmctld.out" 2>&1 &
slurmctld_pid=$!
slurmd -D -N "$node" >"$tmp/slurmd.out" 2>&1 &
slurmd_pid=$!
say "slurmctld pid $slurmctld_pid (port $ctld_port), slurmd pid $slurmd_pid (port $slurmd_port), node $node, $ncpu CPUs"

node_idle() {
    local s
    s=$(sinfo -h -n "$node" -o '%T' 2>/dev/null)
    [[ $s == idle ]]
}
wait_until "node $node to be idle in sinfo (daemons up)" 30 node_idle
say "cluster up after $SECONDS s: $(sinfo -h -o '%P %a %D %T %N')"

# ---- the small configuration
model=/etc/hostname
if [[ -n ${MPQ_SHARED_DIR:-} && -f $MPQ_SHARED_DIR/data/models/stories260K/stories260K.bin ]]; then
    model=$MPQ_SHARED_DIR/data/models/stories260K/stories260K.bin
fi
[[ -f $model ]] || model=$sbatch_script
cat >"$work/small.cfg" <<EOF
# Written by tests/slurm/test_slurm_job.sh.
model = { path = "$model"; tokenizer = ""; };
log = { level = "info"; };
EOF
# The full run: the shipped mixed-precision configuration, made small.
for f in data/models/stories260K/stories260K.bin data/models/stories260K/tok512.bin \
    data/text/wikitext2-valid.txt data/text/tinyshakespeare.txt; do
    [[ -n ${MPQ_SHARED_DIR:-} && -f $MPQ_SHARED_DIR/$f ]] || skip "shared data $f missing (MPQ_SHARED_DIR)"
done
run_cfg=$MPQ_SOURCE_DIR/configs/stories260K-mixed3.cfg
run_args=(-o calibration.segments=16 -o calibration.seq_len=128 -o eval.docs=20
    -o importance.samples=4 -o output.path="$work/run.mpq.h5")

# submit SBATCH ARGS...: submits from the work directory; sets job_id.
job_id=""
submit() {
    local out
    out=$(cd "$work" && sbatch --parsable "$@" 2>&1) || fail "sbatch $* failed: $out"
    out=${out%%;*}
    [[ $out =~ ^[0-9]+$ ]] || fail "sbatch printed '$out', not a job id"
    job_id=$out
    jobs_submitted+=("$job_id")
}

job_done() { is_final_state "$(job_state "$1")"; }

# check_job JOBID STATE EXITCODE: the job ended in STATE with EXITCODE.
check_job() {
    local id=$1 want_state=$2 want_exit=$3 state code
    state=$(job_state "$id")
    code=$(job_exit_code "$id")
    say "job $id: JobState=$state ExitCode=$code"
    [[ $state == "$want_state" ]] || fail "job $id ended in state '$state', expected $want_state"
    [[ $code == "$want_exit" ]] || fail "job $id has ExitCode '$code', expected $want_exit"
}

# check_run JOBID: the output files are named %x-%j (job name mpquant),
# `mpquant run` printed its JSON result (quantized figures, bits per weight,
# the checkpoint), the checkpoint exists and is HDF5, and both ranks logged.
check_run() {
    local id=$1 out=$work/mpquant-$1.out err=$work/mpquant-$1.err
    [[ -f $out ]] || fail "job $id: no output file $out (expected the name %x-%j.out)"
    [[ -f $err ]] || fail "job $id: no error file $err (expected the name %x-%j.err)"
    grep -q '^{"mode":"mixed".*"bpw":[0-9.]*.*"command":"run".*"ranks":2,.*"quantized":{"ppl":' "$out" ||
        fail "job $id: no JSON line of mpquant run (mode, bpw, quantized figures) in $out"
    grep -q "\"checkpoint\":\"$work/run.mpq.h5\"" "$out" || fail "job $id: the JSON line does not name the checkpoint"
    [[ -f $work/run.mpq.h5 ]] || fail "job $id: no checkpoint $work/run.mpq.h5"
    [[ $(head -c 4 "$work/run.mpq.h5" | tail -c 3) == HDF ]] || fail "job $id: $work/run.mpq.h5 is not an HDF5 file"
    grep -q '^\[0/2\] .*checkpoint written' "$err" || fail "job $id: rank 0 of 2 did not log in $err"
    grep -q '^\[1/2\] .*checkpoint written' "$err" || fail "job $id: rank 1 of 2 did not log in $err"
    grep -q 'mpquant finished with exit status 0' "$err" || fail "job $id: no final status line in $err"
}

# check_ranks JOBID: the output files are named %x-%j (job name mpquant),
# the JSON result says the configuration is valid, and both ranks logged.
check_ranks() {
    local id=$1 out=$work/mpquant-$1.out err=$work/mpquant-$1.err
    [[ -f $out ]] || fail "job $id: no output file $out (expected the name %x-%j.out)"
    [[ -f $err ]] || fail "job $id: no error file $err (expected the name %x-%j.err)"
    grep -q '^{.*"command":"check".*"valid":true' "$out" ||
        fail "job $id: no JSON line with \"valid\":true in $out"
    grep -q '^\[0/2\] .*configuration is valid' "$err" || fail "job $id: rank 0 of 2 did not log in $err"
    grep -q '^\[1/2\] .*configuration is valid' "$err" || fail "job $id: rank 1 of 2 did not log in $err"
    grep -q 'mpquant finished with exit status 0' "$err" || fail "job $id: no final status line in $err"
}

# The script's time-limit warning (--signal=B:USR1@600) would come at once
# in a 5-minute job: these jobs get it 30 s before their limit.
common=(-n 2 --mem-per-cpu=100M --time=00:05:00 --signal=B:USR1@30)
# The jobs' temporary files (Open MPI session directories) stay in $tmp.
export TMPDIR=$tmp/jobtmp

# ---- job 1: default launcher, default command: the full `mpquant run`
unset MPQ_LAUNCHER MPQ_COMMAND
submit "${common[@]}" "$sbatch_script" "$run_cfg" --json --log-all-ranks "${run_args[@]}"
job1=$job_id
say "job 1 ($job1): default launcher, mpquant run"
wait_until "job $job1 to finish" 120 job_done "$job1"
check_job "$job1" COMPLETED 0:0
check_run "$job1"
mv "$work/run.mpq.h5" "$work/job1.mpq.h5"

# ---- job 5: a stop and a requeue. SIGUSR1 reaches a rank during block 1
# of the measuring pass (test hook MPQ_TEST_SIGNAL, first attempt only):
# the ranks stop after it with status 75, the script requeues the job, and
# the second attempt resumes after block 2 and writes the same checkpoint
# as job 1 (masked h5dump).
cat >"$tmp/stop-once" <<EOF
#!/bin/bash
if [[ \${SLURM_RESTART_COUNT:-0} == 0 ]]; then export MPQ_TEST_SIGNAL=1; fi
exec "$MPQ_BIN" "\$@"
EOF
chmod 755 "$tmp/stop-once"
real_bin=$MPQ_BIN
export MPQ_BIN=$tmp/stop-once
submit "${common[@]}" "$sbatch_script" "$run_cfg" --json "${run_args[@]}"
job5=$job_id
export MPQ_BIN=$real_bin
say "job 5 ($job5): stopped after block 2, requeued, resumed"
# A requeued job waits about two minutes before it is eligible again; the
# test makes it eligible 10 s after the requeue (sooner, slurmd may still
# hold the ended attempt and refuse the new one: "Job credential revoked").
requeued() {
    scontrol show job -o "$job5" | grep -q 'JobState=PENDING.*Restarts=1\|Restarts=1.*JobState=PENDING'
}
wait_until "job $job5 to be requeued" 60 requeued
scontrol update JobId="$job5" StartTime=now+10 || fail "cannot make the requeued job $job5 eligible"
wait_until "job $job5 to finish after its requeue" 90 job_done "$job5"
check_job "$job5" COMPLETED 0:0
err5=$work/mpquant-$job5.err
grep -q 'stopped by SIGUSR1 after block 2 of 5 (measure)' "$err5" || fail "job $job5: no stop logged in $err5"
grep -q "requeued job $job5" "$err5" || fail "job $job5: the script did not requeue the job"
grep -q 'measure: resuming after block 2 of 5' "$err5" || fail "job $job5: the second attempt did not resume"
restarts=$(scontrol show job -o "$job5" | grep -o 'Restarts=[0-9]*' | cut -d= -f2)
[[ $restarts == 1 ]] || fail "job $job5: Restarts=$restarts, expected 1"
# shellcheck source=tests/h5dump_masked.sh disable=SC1091
. "$MPQ_SOURCE_DIR/tests/h5dump_masked.sh"
masked_h5dump "$work/job1.mpq.h5" >"$tmp/job1.txt"
masked_h5dump "$work/run.mpq.h5" >"$tmp/job5.txt"
cmp -s "$tmp/job1.txt" "$tmp/job5.txt" ||
    fail "job $job5: the resumed checkpoint differs from job $job1's: $(diff "$tmp/job1.txt" "$tmp/job5.txt" | head -c 600)"

# The other jobs test the script's mechanics with the quick subcommand.
export MPQ_COMMAND=check
grep -q 'launcher: srun --mpi=pmix' "$work/mpquant-$job1.err" ||
    fail "job $job1: the default launcher is not 'srun --mpi=pmix' (srun --mpi=list: $(srun --mpi=list 2>&1 | tr '\n' ' '))"
grep -q '2 task(s)' "$work/mpquant-$job1.err" || fail "job $job1: the script did not see 2 tasks"
leftover=$(find "$work" -maxdepth 1 -name '.mpquant-ranks.*')
[[ -z $leftover ]] || fail "jobs $job1 and $job5 (stopped and requeued): rank-marker directory left behind: $leftover"

# ---- job 2: mpirun, and SIGUSR1 to the batch shell while mpquant runs
release=$work/release
cat >"$tmp/held-mpquant" <<EOF
#!/bin/bash
# Waits (at most 60 s) for $release, then runs mpquant.
for ((i = 0; i < 600; i++)); do [[ -e $release ]] && break; sleep 0.1; done
exec "$MPQ_BIN" "\$@"
EOF
chmod 755 "$tmp/held-mpquant"
real_bin=$MPQ_BIN
export MPQ_LAUNCHER=mpirun MPQ_BIN=$tmp/held-mpquant
submit "${common[@]}" "$sbatch_script" "$work/small.cfg" --json --log-all-ranks
job2=$job_id
unset MPQ_LAUNCHER
export MPQ_BIN=$real_bin
say "job 2 ($job2): MPQ_LAUNCHER=mpirun, SIGUSR1 while running"
err2=$work/mpquant-$job2.err
launched() { grep -q '^\[quantize.sbatch .*\] running: ' "$err2" 2>/dev/null; }
wait_until "job $job2 to start mpquant" 60 launched
scancel --batch --signal=USR1 "$job2" || fail "scancel --batch --signal=USR1 $job2 failed"
warned() { grep -q 'warning: the time limit is near' "$err2"; }
wait_until "job $job2 to log the SIGUSR1 warning" 30 warned
touch "$release"
wait_until "job $job2 to finish" 120 job_done "$job2"
check_job "$job2" COMPLETED 0:0
check_ranks "$job2"
grep -q 'launcher: mpirun$' "$err2" || fail "job $job2: launcher is not mpirun"

# ---- job 3: a configuration that does not exist
submit "${common[@]}" "$sbatch_script" "$work/missing.cfg"
job3=$job_id
say "job 3 ($job3): missing configuration"
wait_until "job $job3 to finish" 60 job_done "$job3"
check_job "$job3" FAILED 2:0
grep -q "configuration file '$work/missing.cfg' not found" "$work/mpquant-$job3.err" ||
    fail "job $job3: the error does not name the missing configuration"

# ---- job 4: a task launch that fails while srun exits 0 (Slurm 22.05)
# The PMIx plugin cannot create its app directory when it exists already;
# srun then reports "task 0 launch failed" yet exits 0. The script must
# notice that no rank started and fail the job.
job4_guess=$((job3 + 1))
mkdir -p "$tmp/tmpfs/spmix_appdir_$(id -u)_${job4_guess}.0"
submit "${common[@]}" "$sbatch_script" "$work/small.cfg" --json
job4=$job_id
say "job 4 ($job4): srun launch failure"
[[ $job4 == "$job4_guess" ]] || fail "job 4 got id $job4, expected $job4_guess (job ids are sequential)"
wait_until "job $job4 to finish" 120 job_done "$job4"
err4=$work/mpquant-$job4.err
grep -q 'launch failed' "$err4" ||
    fail "job $job4: srun did not fail to launch; the PMIx app directory trick no longer provokes it"
check_job "$job4" FAILED 1:0
grep -q 'the launcher exited 0 but only 0 of 2 rank(s) started' "$err4" ||
    fail "job $job4: the script did not report the ranks that never started"

say "PASS: 5 jobs in $SECONDS s (2-rank run and check via srun --mpi=pmix and mpirun, SIGUSR1 trap, missing config, launch failure, stop and requeue)"
exit 0
