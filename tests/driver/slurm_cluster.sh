#!/bin/bash
# shellcheck disable=SC2317 # functions run through trap and wait_until look unreachable
#
# slurm_cluster.sh: a private one-node Slurm cluster for tests (sourced).
# The same set-up as tests/slurm/test_slurm_job.sh, as functions another
# cluster test can share:
#   cluster_start   munged with a fresh key, slurmctld and slurmd with a
#                   generated slurm.conf on free ports, all in a temporary
#                   directory ($cl_tmp), in the foreground (their pids are
#                   held); exports SLURM_CONF; waits for the node to be idle
#   cluster_stop    cancels unfinished jobs of cl_jobs, stops exactly the
#                   daemons it started (by pid), removes $cl_tmp
#   cl_wait DESC MAX CMD...   polls CMD until it succeeds (bounded by MAX
#                   seconds and the test's deadline; fails if a daemon died)
#   cl_job_state ID, cl_job_exit ID, cl_job_done ID
# The caller defines say, fail and skip, and sets cl_deadline (SECONDS value).
# Needs root and the Debian packages slurm-wlm and munge; skips otherwise.

cl_deadline=${cl_deadline:-$((SECONDS + 150))}
cl_tmp=""
cl_munged=""
cl_ctld=""
cl_slurmd=""
cl_jobs=()

cl_job_state() { scontrol show job -o "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | head -n 1 | cut -d= -f2; }
cl_job_exit() { scontrol show job -o "$1" 2>/dev/null | grep -o ' ExitCode=[0-9:]*' | head -n 1 | cut -d= -f2; }
cl_final() {
    case $1 in
    COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | PREEMPTED | BOOT_FAIL | DEADLINE) return 0 ;;
    esac
    return 1
}
# Done when every record of the job (all tasks of an array) is final.
cl_job_done() {
    local s
    s=$(scontrol show job -o "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
    [[ -n $s ]] || return 1
    while read -r x; do cl_final "$x" || return 1; done <<<"$s"
}

cl_stop_daemon() { # NAME PID
    local pid=$2 i
    [[ -n $pid ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for ((i = 0; i < 150; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
}

cl_wait() { # DESCRIPTION MAX_SECONDS COMMAND...
    local what=$1 max=$2 end
    shift 2
    end=$((SECONDS + max))
    ((end > cl_deadline)) && end=$cl_deadline
    while ! "$@"; do
        for p in "$cl_munged" "$cl_ctld" "$cl_slurmd"; do
            [[ -z $p ]] || kill -0 "$p" 2>/dev/null || fail "a Slurm daemon (pid $p) died while waiting for: $what"
        done
        ((SECONDS < end)) || fail "timed out after ${max} s waiting for: $what"
        sleep 0.2
    done
}

cl_port_free() {
    local hex
    hex=$(printf '%04X' "$1")
    ! awk -v p="$hex" 'FNR > 1 { split($2, a, ":"); if (a[2] == p) found = 1 } END { exit !found }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

cluster_logs() {
    local f
    for f in "$cl_tmp"/*.log "$cl_tmp"/*.out; do
        [[ -s $f ]] || continue
        printf '\n----- %s (last 40 lines) -----\n' "$f" >&2
        tail -n 40 "$f" >&2
    done
}

cluster_stop() {
    local id i
    if [[ -n $cl_ctld ]]; then
        for id in "${cl_jobs[@]}"; do
            cl_job_done "$id" && continue
            scancel "$id" 2>/dev/null
            for ((i = 0; i < 100; i++)); do
                cl_job_done "$id" && break
                sleep 0.2
            done
        done
    fi
    cl_stop_daemon slurmd "$cl_slurmd"
    cl_stop_daemon slurmctld "$cl_ctld"
    cl_stop_daemon munged "$cl_munged"
    cl_slurmd="" cl_ctld="" cl_munged=""
    if [[ -n $cl_tmp && ${MPQ_KEEP_TMP:-0} != 1 ]]; then
        rm -rf "$cl_tmp"
    fi
}

cluster_start() {
    local c try p ctld_port="" key node ncpu mem_mb
    for c in munged slurmctld slurmd sbatch scontrol sinfo scancel srun mpirun; do
        command -v "$c" >/dev/null 2>&1 ||
            skip "'$c' not found: install slurm-wlm, munge and openmpi-bin (pipeline/install-deps.sh)"
    done
    [[ $(id -u) -eq 0 ]] || skip "the private Slurm cluster needs root"
    while read -r v; do unset "$v"; done < <(compgen -e | grep '^SLURM_')
    cl_tmp=$(mktemp -d /tmp/mpq-slurm-sweep.XXXXXX) || fail "mktemp failed"
    chmod 755 "$cl_tmp"
    mkdir -p "$cl_tmp/state" "$cl_tmp/spool" "$cl_tmp/tmpfs" "$cl_tmp/jobtmp"
    for ((try = 0; try < 50; try++)); do
        p=$((20000 + RANDOM % 30000))
        if cl_port_free "$p" && cl_port_free $((p + 1)); then
            ctld_port=$p
            break
        fi
    done
    [[ -n $ctld_port ]] || fail "no two free consecutive TCP ports"
    key=$cl_tmp/munge.key
    dd if=/dev/urandom of="$key" bs=128 count=1 status=none || fail "cannot write $key"
    chmod 600 "$key"
    munged --foreground --key-file="$key" --socket="$cl_tmp/munge.socket" \
        --pid-file="$cl_tmp/munged.pid" --log-file="$cl_tmp/munged.log" \
        --seed-file="$cl_tmp/munged.seed" >"$cl_tmp/munged.out" 2>&1 &
    cl_munged=$!
    cl_wait "munged socket" 30 test -S "$cl_tmp/munge.socket"
    node=$(hostname -s)
    ncpu=$(nproc)
    ((ncpu < 2)) && ncpu=2
    mem_mb=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
    export SLURM_CONF=$cl_tmp/slurm.conf
    cat >"$SLURM_CONF" <<EOF
ClusterName=mpqsweep
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$((ctld_port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$cl_tmp/munge.socket
StateSaveLocation=$cl_tmp/state
SlurmdSpoolDir=$cl_tmp/spool
SlurmctldPidFile=$cl_tmp/slurmctld.pid
SlurmdPidFile=$cl_tmp/slurmd.pid
SlurmctldLogFile=$cl_tmp/slurmctld.log
SlurmdLogFile=$cl_tmp/slurmd.log
MailProg=/bin/true
TmpFS=$cl_tmp/tmpfs
FirstJobId=$((1000 + RANDOM * 30))
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
NodeName=$node NodeAddr=127.0.0.1 CPUs=$ncpu RealMemory=${mem_mb:-1024} State=UNKNOWN
PartitionName=mpqsweep Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    slurmctld -D -i >"$cl_tmp/slurmctld.out" 2>&1 &
    cl_ctld=$!
    slurmd -D -N "$node" >"$cl_tmp/slurmd.out" 2>&1 &
    cl_slurmd=$!
    cl_node_idle() { [[ $(sinfo -h -n "$node" -o '%T' 2>/dev/null) == idle ]]; }
    cl_wait "node $node idle" 30 cl_node_idle
    export TMPDIR=$cl_tmp/jobtmp
}
