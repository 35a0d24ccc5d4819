#!/bin/bash
#
# sweep-submit.sh: submits `mpquant sweep CONFIG` as three dependent Slurm
# jobs (see slurm/sweep.sbatch): measure, a job array of points (afterok:
# measure), merge (afterok: the whole array).
#
#   slurm/sweep-submit.sh CONFIG [SBATCH OPTIONS...]
#   MPQ_SWEEP_GROUP=3 slurm/sweep-submit.sh configs/sweep-stories260K.cfg -n 2
#
# SBATCH OPTIONS go to all three jobs. MPQ_SWEEP_GROUP: points per array
# task (default 1). MPQ_BIN: the mpquant binary (default: mpquant on PATH),
# also used here, as one process, to count the points (--stage plan).
# Prints "measure=ID points=ID merge=ID" and, last, the merge job's id.
set -u -o pipefail
die() {
    printf 'sweep-submit.sh: error: %s\n' "$*" >&2
    exit 2
}
[[ $# -ge 1 ]] || die "usage: slurm/sweep-submit.sh CONFIG [SBATCH OPTIONS...]"
config=$1
shift
[[ -f $config ]] || die "configuration file '$config' not found"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MPQ_SLURM_DIR=$here
bin=${MPQ_BIN:-$(command -v mpquant)} || die "mpquant not found: set MPQ_BIN"
group=${MPQ_SWEEP_GROUP:-1}
[[ $group =~ ^[1-9][0-9]*$ ]] || die "MPQ_SWEEP_GROUP='$group' is not a positive integer"
n=$("$bin" sweep "$config" --stage=plan) || die "mpquant sweep --stage=plan failed"
[[ $n =~ ^[0-9]+$ && $n -gt 0 ]] || die "the plan has no points ('$n')"
tasks=$(((n + group - 1) / group))

submit() { # prints the job id
    local out
    out=$(sbatch --parsable "$@") || die "sbatch $* failed: $out"
    printf '%s\n' "${out%%;*}"
}
j1=$(submit "$@" "$here/sweep.sbatch" "$config" measure) || exit 2
j2=$(submit "$@" --dependency="afterok:$j1" --array="0-$((tasks - 1))" \
    "$here/sweep.sbatch" "$config" point "$group") || exit 2
j3=$(submit "$@" --dependency="afterok:$j2" "$here/sweep.sbatch" "$config" merge) || exit 2
printf 'measure=%s points=%s merge=%s (%s points in %s array tasks)\n' "$j1" "$j2" "$j3" "$n" "$tasks"
printf '%s\n' "$j3"
