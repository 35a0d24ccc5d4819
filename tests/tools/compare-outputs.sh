#!/bin/bash
# compare-outputs.sh: do two mpquant binaries give the same results on every
# shipped configuration? For code changes that must not change any output.
#
#   bash tests/tools/compare-outputs.sh OLD_BIN NEW_BIN [NP] [CONFIG...]
#
# For each configuration (default: every configs/*.cfg) both binaries run
# under mpirun -np NP (default 2) from their own scratch directory:
#  - run: the --json line with every time and memory figure removed, the
#    checkpoint as h5dump text with its date and time attributes masked,
#    and the checkpoint exported to safetensors (bytes);
#  - sweep: report.csv and report.json with times removed, and points/*.json.
# Prints one line per configuration ("same" or "DIFFERENT: what") and exits
# 1 when anything differs. Needs jq and h5dump (hdf5-tools).
set -u
old=$(realpath "$1") new=$(realpath "$2") np=${3:-2}
shift 2
[ $# -gt 0 ] && shift
src=$(cd "$(dirname "$0")/../.." && pwd)
cfgs=("$@")
[ ${#cfgs[@]} -gt 0 ] || cfgs=("$src"/configs/*.cfg)
export MPQ_SHARED_DIR=${MPQ_SHARED_DIR:-$src/../shared}
mpi=(mpirun --oversubscribe -np "$np")
[ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
work=$(mktemp -d)
[ -n "${MPQ_KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
# jq filter: drop every key that is a time or a memory figure.
nt='walk(if type == "object" then with_entries(select(.key | test("time|seconds|_s$|rss|date|created|checkpoint|commit|creator") | not)) else . end)'
status=0
for cfg in "${cfgs[@]}"; do
    cfg=$(realpath "$cfg")
    name=$(basename "$cfg" .cfg)
    for side in old new; do
        d="$work/$name/$side"
        mkdir -p "$d"
        bin=$old
        [ "$side" = new ] && bin=$new
        case "$name" in
        sweep-*)
            (cd "$d" && "${mpi[@]}" "$bin" sweep "$cfg" -q -o sweep.output_dir="$d/sw" >/dev/null 2>"$d/err")
            for f in "$d"/sw/report.json "$d"/sw/points/*.json; do
                [ -e "$f" ] && jq -S "$nt" "$f" >"$f.norm"
            done
            [ -e "$d/sw/report.csv" ] && cut -d, -f1-12 "$d/sw/report.csv" >"$d/report.csv.norm"
            ;;
        *)
            (cd "$d" && "${mpi[@]}" "$bin" run "$cfg" -q --json -o output.path="$d/ck.h5" \
                -o output.overwrite=true 2>"$d/err" | tail -n 1 | jq -S "$nt" >"$d/json.norm")
            if [ -e "$d/ck.h5" ]; then
                # Masked: the scratch directory, dates, the build commit (and
                # the string sizes that follow it) and the stage times.
                h5dump "$d/ck.h5" | sed -E "s|$d|DIR|g" |
                    sed -E 's/[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9:.+Z-]+/DATE/g
                            s/"[0-9a-f]{7,40}(-dirty)?"/"COMMIT"/; s/STRSIZE [0-9]+;/STRSIZE N;/
                            s/"\{"load":.*/"STAGE TIMES"/' >"$d/h5.norm"
                "$bin" export "$d/ck.h5" --format safetensors --output "$d/ex.safetensors" \
                    --no-config 2>>"$d/err" >/dev/null
            fi
            ;;
        esac
    done
    o="$work/$name/old" n="$work/$name/new"
    diffs=""
    while IFS= read -r f; do
        rel=${f#"$o/"}
        cmp -s "$f" "$n/$rel" || diffs="$diffs $rel"
    done < <(find "$o" -type f \( -name '*.norm' -o -name '*.safetensors' \) | sort)
    [ -n "$(find "$o" -name '*.norm')" ] || diffs=" (no output: see $o/err)"
    if [ -z "$diffs" ]; then
        echo "$name: same"
    else
        echo "$name: DIFFERENT:$diffs"
        status=1
    fi
done
exit $status
