#!/bin/bash
# shellcheck disable=SC2317 # functions called through wait_for look unreachable
#
# test_sbatch_script.sh: checks slurm/quantize.sbatch without a Slurm cluster:
# bash -n and shellcheck; the #SBATCH lines; clear failures (exit 2) for a
# missing argument, a missing configuration and a bad MPQ_BIN; a run outside
# an allocation as one process and as 2 ranks through MPQ_LAUNCHER; mpquant's
# exit status passed through; SIGUSR1 logged while `mpquant check` keeps
# running; SIGTERM passed on to the launcher; SIGUSR1 passed on to `run`,
# whose stop status 75 comes back with the advice to resume.
#
# Environment: MPQ_BIN, MPQ_SOURCE_DIR, MPQ_MPIEXEC (set by ctest).
set -u -o pipefail

say() { printf '[sbatch script test] %s\n' "$*"; }
fail() {
    printf '[sbatch script test] FAIL: %s\n' "$*" >&2
    exit 1
}

[[ -n ${MPQ_BIN:-} && -x ${MPQ_BIN:-} ]] || fail "MPQ_BIN='${MPQ_BIN:-}' is not an executable (run through ctest)"
[[ -n ${MPQ_SOURCE_DIR:-} ]] || fail "MPQ_SOURCE_DIR is not set (run through ctest)"
[[ -n ${MPQ_MPIEXEC:-} ]] || fail "MPQ_MPIEXEC is not set (run through ctest)"
script=$MPQ_SOURCE_DIR/slurm/quantize.sbatch
[[ -f $script ]] || fail "$script not found"

# Outside any allocation, whatever the caller's environment.
while read -r v; do
    unset "$v"
done < <(compgen -e | grep '^SLURM_')
unset MPQ_LAUNCHER MPQ_COMMAND
# The script's mechanics are tested with the quick `check` subcommand (the
# default, `run`, is submitted by test_slurm_job.sh).
export MPQ_COMMAND=check

tmp=$(mktemp -d /tmp/mpq-sbatch-test.XXXXXX) || fail "mktemp failed"
bg_pid=""
cleanup() {
    local rc=$?
    trap - EXIT
    if [[ -n $bg_pid ]] && kill -0 "$bg_pid" 2>/dev/null; then
        kill -KILL "$bg_pid" 2>/dev/null
        wait "$bg_pid" 2>/dev/null
    fi
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
cd "$tmp" || fail "cannot enter $tmp"

# ---- syntax and lint
bash -n "$script" || fail "bash -n $script"
if command -v shellcheck >/dev/null 2>&1; then
    shellcheck "$script" || fail "shellcheck $script"
    shellcheck "$MPQ_SOURCE_DIR/tests/slurm/test_slurm_job.sh" "$0" || fail "shellcheck of the test scripts"
    say "bash -n and shellcheck: clean"
elif [[ ${CI:-} == true ]]; then
    fail "shellcheck not found (CI=true): install the Debian package shellcheck (pipeline/install-deps.sh)"
else
    say "shellcheck not found: lint skipped (install the Debian package shellcheck)"
fi

# ---- the #SBATCH lines the documentation promises (before any command)
for want in '--job-name=' '--nodes=' '--ntasks=' '--cpus-per-task=' '--mem-per-cpu=' '--time=' \
    '--output=%x-%j.out' '--error=%x-%j.err' '--signal=B:USR1@600' '--requeue' '--open-mode=append'; do
    grep -q -- "^#SBATCH $want" "$script" || fail "no '#SBATCH $want' line in $script"
done
first_cmd=$(grep -n -v -E '^[[:space:]]*(#|$)' "$script" | head -n 1 | cut -d: -f1)
last_sbatch=$(grep -n '^#SBATCH' "$script" | tail -n 1 | cut -d: -f1)
((last_sbatch < first_cmd)) || fail "an #SBATCH line (line $last_sbatch) follows the first command (line $first_cmd): sbatch ignores it"

# expect_rc WANT_RC PATTERN -- COMMAND...: status and a line of stderr.
expect_rc() {
    local want=$1 pattern=$2 rc
    shift 3
    "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [[ $rc -ne $want ]]; then
        cat "$tmp/out" "$tmp/err" >&2
        fail "'$*' exited $rc, expected $want"
    fi
    if [[ -n $pattern ]] && ! grep -q -- "$pattern" "$tmp/err"; then
        cat "$tmp/err" >&2
        fail "'$*': stderr lacks '$pattern'"
    fi
}

# ---- clear failures
expect_rc 2 'missing argument: the configuration file' -- bash "$script"
expect_rc 2 "configuration file 'nowhere.cfg' not found" -- bash "$script" nowhere.cfg --json
mkdir "$tmp/adir"
expect_rc 2 "is not a readable file" -- bash "$script" "$tmp/adir"
printf 'log = { level = "info"; };\nmodel = { path = "%s"; tokenizer = ""; };\n' "$script" >"$tmp/small.cfg"
expect_rc 2 "MPQ_BIN='$tmp/nobin' is not an executable file" -- env MPQ_BIN="$tmp/nobin" bash "$script" small.cfg
expect_rc 2 "mpquant not found" -- env -u MPQ_BIN PATH=/usr/bin:/bin bash "$script" small.cfg
say "missing argument / configuration / binary: exit 2 with a message"

# ---- one process, outside Slurm
expect_rc 0 'launcher: none (one process)' -- bash "$script" small.cfg --json
grep -q '^{.*"valid":true' "$tmp/out" || fail "one process: no JSON line with \"valid\":true"

# ---- 2 ranks through MPQ_LAUNCHER, extra arguments passed through
expect_rc 0 '^\[1/2\] .*configuration is valid' -- \
    env MPQ_LAUNCHER="$MPQ_MPIEXEC -np 2" bash "$script" small.cfg --json --log-all-ranks -o log.progress_interval=7
grep -q '^\[0/2\] .*configuration is valid' "$tmp/err" || fail "2 ranks: rank 0 did not log"
grep -q '"progress_interval":7' "$tmp/out" || fail "2 ranks: the -o override did not reach mpquant"
say "1 process and 2 ranks (MPQ_LAUNCHER): valid, overrides passed through"

# ---- mpquant's status passed through (an invalid configuration)
printf 'log = { level = "loudest"; };\n' >"$tmp/bad.cfg"
"$MPQ_BIN" check "$tmp/bad.cfg" >/dev/null 2>&1
direct=$?
[[ $direct -ne 0 ]] || fail "mpquant check accepted log.level=loudest; the pass-through check needs a failing run"
expect_rc "$direct" "mpquant finished with exit status $direct" -- bash "$script" bad.cfg
say "invalid configuration: exit status $direct passed through"

# ---- signals: a binary that holds until released (at most 30 s)
cat >"$tmp/held" <<EOF
#!/bin/bash
for ((i = 0; i < 300; i++)); do [[ -e $tmp/release ]] && break; sleep 0.1; done
exec "$MPQ_BIN" "\$@"
EOF
chmod 755 "$tmp/held"

wait_for() { # wait_for SECONDS COMMAND...
    local i
    for ((i = 0; i < $1 * 10; i++)); do
        "${@:2}" && return 0
        sleep 0.1
    done
    return 1
}
err_has() { grep -q -- "$1" "$tmp/sig.err"; }
not_running() { ! kill -0 "$bg_pid" 2>/dev/null; }

MPQ_BIN=$tmp/held bash "$script" small.cfg --json >"$tmp/sig.out" 2>"$tmp/sig.err" &
bg_pid=$!
wait_for 20 err_has '] running: ' || fail "USR1: the script did not start the binary"
kill -USR1 "$bg_pid"
wait_for 20 err_has 'warning: the time limit is near' || fail "USR1: no warning logged"
kill -0 "$bg_pid" 2>/dev/null || fail "USR1 ended the script"
touch "$tmp/release"
wait_for 30 not_running || fail "USR1: the script did not finish after release"
wait "$bg_pid"
rc=$?
bg_pid=""
[[ $rc -eq 0 ]] || fail "USR1: exit status $rc, expected 0"
grep -q '^{.*"valid":true' "$tmp/sig.out" || fail "USR1: mpquant did not complete"
say "SIGUSR1: warning logged, mpquant completed, exit 0"

rm -f "$tmp/release"
MPQ_BIN=$tmp/held bash "$script" small.cfg >"$tmp/sig.out" 2>"$tmp/sig.err" &
bg_pid=$!
wait_for 20 err_has '] running: ' || fail "TERM: the script did not start the binary"
kill -TERM "$bg_pid"
wait_for 20 not_running || fail "TERM: the script is still running 20 s after SIGTERM"
wait "$bg_pid"
rc=$?
bg_pid=""
err_has 'SIGTERM: the job was cancelled' || fail "TERM: not logged"
[[ $rc -eq 143 ]] || fail "TERM: exit status $rc, expected 143 (the held binary killed by SIGTERM)"
say "SIGTERM: logged, passed on to the launcher, exit 143"
# ---- SIGUSR1 with `run`: passed on to mpquant, which stops (a stand-in
# that records the signal and exits 75, as mpquant does at the next block
# boundary); outside Slurm the script tells how to resume.
cat >"$tmp/stopper" <<EOF
#!/bin/bash
trap 'echo got-usr1 >"$tmp/stopper.sig"; exit 75' USR1
echo started >"$tmp/stopper.sig"
for ((i = 0; i < 300; i++)); do sleep 0.1; done
exit 0
EOF
chmod 755 "$tmp/stopper"
MPQ_COMMAND=run MPQ_BIN=$tmp/stopper bash "$script" small.cfg >"$tmp/sig.out" 2>"$tmp/sig.err" &
bg_pid=$!
started() { grep -q started "$tmp/stopper.sig" 2>/dev/null; }
wait_for 20 started || fail "run USR1: the script did not start the binary"
kill -USR1 "$bg_pid"
wait_for 20 not_running || fail "run USR1: the script is still running 20 s after SIGUSR1"
wait "$bg_pid"
rc=$?
bg_pid=""
grep -q got-usr1 "$tmp/stopper.sig" || fail "run USR1: the signal did not reach the binary"
[[ $rc -eq 75 ]] || fail "run USR1: exit status $rc, expected 75 (stopped, resumable)"
err_has 'asking mpquant to stop after the block in progress' || fail "run USR1: not logged"
err_has 'run the same command again' || fail "run USR1: no resume advice outside Slurm"
say "SIGUSR1 with run: passed on, exit 75, resume advice"
say "PASS"
