#!/bin/bash
# valgrind-tests.sh: runs the single-process C tests of a build under
# valgrind memcheck (zero errors and no definite leaks required).
#
#   bash tests/valgrind-tests.sh BUILD_DIR [CTEST_REGEX]
#
# Which tests: those ctest runs as a direct executable (not through mpirun,
# not a shell script), optionally filtered by CTEST_REGEX, minus the
# benchmarks and the slow numeric tests listed in SLOW below (valgrind runs
# them 20-50x slower: models_io_tokenizer alone takes 340 s and
# quant_formats 170 s on one core; they run under ASan+UBSan instead). The commands and
# environments come from `ctest --show-only=json-v1`, so the tests run
# exactly as ctest would run them. Suppressions: Open MPI's own file and
# tests/valgrind.supp (library-internal allocations only).
set -u
build=$(cd "${1:?usage: valgrind-tests.sh BUILD_DIR [REGEX]}" && pwd)
regex=${2:-.}
src=$(cd "$(dirname "$0")/.." && pwd)
command -v valgrind >/dev/null || { echo "valgrind-tests: valgrind not found (Debian package 'valgrind')" >&2; exit 1; }
command -v jq >/dev/null || { echo "valgrind-tests: jq not found" >&2; exit 1; }
SLOW='^(bench_|models_run_|models_io_logits|models_io_tokenizer|round_|quant_grid|quant_formats|mixed_budget$)'
supp=(--suppressions=/usr/share/openmpi/openmpi-valgrind.supp --suppressions="$src/tests/valgrind.supp")
[ -f /usr/share/openmpi/openmpi-valgrind.supp ] || supp=(--suppressions="$src/tests/valgrind.supp")
list=$(ctest --test-dir "$build" --show-only=json-v1 -R "$regex" | jq -c '.tests[]
    | select(.command != null)
    | select((.command[0] | test("mpiexec|mpirun|/bash$|/sh$")) | not)
    | {name, command, env: ([.properties[]? | select(.name == "ENVIRONMENT") | .value[]] ),
       wd: ([.properties[]? | select(.name == "WORKING_DIRECTORY") | .value][0] // ".")}')
pass=0
failed=()
t0=$SECONDS
while IFS= read -r t; do
    [ -n "$t" ] || continue
    name=$(jq -r .name <<<"$t")
    if [[ $name =~ $SLOW ]]; then
        continue
    fi
    mapfile -t cmd < <(jq -r '.command[]' <<<"$t")
    mapfile -t envs < <(jq -r '.env[]' <<<"$t")
    wd=$(jq -r .wd <<<"$t")
    log="$build/valgrind-$name.log"
    s=$SECONDS
    (cd "$wd" && env "${envs[@]}" ASAN_OPTIONS= valgrind -q --error-exitcode=99 --leak-check=full \
        --errors-for-leak-kinds=definite --show-leak-kinds=definite "${supp[@]}" \
        --log-file="$log" "${cmd[@]}" >"$log.out" 2>&1)
    rc=$?
    if [ "$rc" -eq 0 ] || [ "$rc" -eq 77 ]; then
        pass=$((pass + 1))
        echo "valgrind: $name ok ($((SECONDS - s)) s)"
    else
        failed+=("$name")
        echo "valgrind: $name FAILED (exit $rc); report:"
        head -60 "$log"
        tail -20 "$log.out"
    fi
done <<<"$list"
printf '{"valgrind_tests": %d, "failed": %d, "seconds": %d}\n' "$((pass + ${#failed[@]}))" \
    "${#failed[@]}" "$((SECONDS - t0))"
[ ${#failed[@]} -eq 0 ] || { echo "valgrind: failed: ${failed[*]}" >&2; exit 1; }
