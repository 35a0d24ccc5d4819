#!/bin/bash
# The mpquant command line: version, help, check, --json, overrides, usage
# errors, error messages printed once, the event log, and all-ranks logging.
set -u
. "$(dirname "$0")/../lib.sh"

CFG="$MPQ_SOURCE_DIR/configs/default.cfg"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

run "$MPQ_BIN" --version
expect_rc 0
expect_out "^mpquant [0-9]+\.[0-9]+\.[0-9]+ \(commit "
expect_out "^BLAS: .*OpenBLAS [0-9]"

run "$MPQ_BIN" --help
expect_rc 0
expect_out "^  check "
expect_out "--json"

run "$MPQ_BIN"
expect_rc 2
expect_err "no command given"

run "$MPQ_BIN" chek "$CFG"
expect_rc 2
expect_err "unknown command 'chek' \(did you mean 'check'\?\)"

run "$MPQ_BIN" check --frobnicate "$CFG"
expect_rc 2
expect_err "unknown option '--frobnicate' for command check"

run "$MPQ_BIN" check "$CFG" extra-argument
expect_rc 2

run "$MPQ_BIN" check "$CFG"
expect_rc 0
expect_out "^model = \{"
expect_out "^  format = \"auto\";"
expect_err "configuration is valid"

# The printed effective configuration is itself a valid configuration that
# prints the same way.
grep -v '^#' "$OUT" > "$T/effective.cfg"
run "$MPQ_BIN" check "$T/effective.cfg"
expect_rc 0
grep -v '^#' "$OUT" > "$T/effective2.cfg"
cmp -s "$T/effective.cfg" "$T/effective2.cfg" || fail "effective configuration is not a fixed point"

# --json: the last line of stdout is one JSON object with the results.
run "$MPQ_BIN" check "$CFG" --json -o log.level=debug -o log.progress_interval=2
expect_rc 0
last_json | jq -e '.command == "check" and .valid == true' >/dev/null || fail "bad --json line"
last_json | jq -e '.effective.log.level == "debug" and .effective.log.progress_interval == 2' \
    >/dev/null || fail "overrides not in the effective configuration"

# Override errors are validated like the file.
run "$MPQ_BIN" check "$CFG" -o log.levle=debug
expect_rc 1
expect_err "override '-o log.levle=debug': unknown key 'log.levle' \(did you mean 'log.level'\?\)"
expect_once "mpquant: error"

run "$MPQ_BIN" check "$CFG" -o log.progress_interval=-1
expect_rc 1
expect_err "log.progress_interval: value -1 is out of range"

# File errors name file:line and the key.
printf 'model = {\n  format = "auto";\n  tokeniser = "t.bin";\n};\n' > "$T/bad.cfg"
run "$MPQ_BIN" check "$T/bad.cfg"
expect_rc 1
expect_err "$T/bad.cfg:3: unknown key 'model.tokeniser' \(did you mean 'model.tokenizer'\?\)"

run "$MPQ_BIN" check "$T/missing.cfg"
expect_rc 1
expect_err "$T/missing.cfg: cannot open configuration file: No such file"

# Input files named by the configuration must exist (unless --no-paths).
printf 'model = { path = "nowhere.bin"; };\n' > "$T/nopath.cfg"
run "$MPQ_BIN" check "$T/nopath.cfg"
expect_rc 1
expect_err "model.path: cannot read '$T/nowhere.bin'"
run "$MPQ_BIN" check --no-paths "$T/nopath.cfg"
expect_rc 0

# check refuses what run would refuse before loading anything: two equal
# candidates, an unknown quantizer, candidates without a budget; a shipped
# sweep configuration is checked as a sweep (candidates without a budget).
run "$MPQ_BIN" check "$CFG" -o quant.candidates=int:bits=2,int:bits=2
expect_rc 1
expect_err "quant.candidates: items 0 and 1 are the same quantizer"
run "$MPQ_BIN" check "$CFG" -o quant.spec=garbage -o quant.candidates= -o budget.avg_bits=0
expect_rc 1
expect_err "quant.spec: \"garbage\": .*unknown quantizer 'garbage'"
run "$MPQ_BIN" check "$CFG" -o budget.avg_bits=0 -o budget.bytes=0
expect_rc 1
expect_err "quant.candidates is set \(mixed precision\) but no budget"
run "$MPQ_BIN" check "$MPQ_SOURCE_DIR/configs/sweep-stories260K.cfg"
expect_rc 0
# A spec of 5 MB in a file is refused like one given with -o, with a short
# message.
{
    printf 'quant = { spec = "int:bits=4'
    head -c 5000000 /dev/zero | tr '\0' ' '
    printf '"; };\n'
} >"$T/bigspec.cfg"
run "$MPQ_BIN" check --no-paths "$T/bigspec.cfg"
expect_rc 1
expect_err "is 5000010 bytes long \(at most 159\)"
[ "$(wc -c <"$ERR")" -lt 2000 ] || fail "the message is $(wc -c <"$ERR") bytes long"

# The traceback is shown at debug level.
run "$MPQ_BIN" --log-level debug check "$T/bad.cfg"
expect_rc 1
expect_err "traceback"
expect_err "config.c:[0-9]+ walk\(\)"

# Event log: valid JSON lines with the run's start and end.
run "$MPQ_BIN" check "$CFG" --event-log "$T/events.jsonl"
expect_rc 0
jq -e -s 'length >= 2 and .[0].event == "run_start" and .[-1].event == "run_end"
          and .[-1].exit_code == 0' "$T/events.jsonl" >/dev/null || fail "bad event log"
run "$MPQ_BIN" check "$T/bad.cfg" --event-log "$T/events-fail.jsonl"
jq -e -s 'map(select(.event == "error"))[0].message | test("unknown key")' \
    "$T/events-fail.jsonl" >/dev/null || fail "error event missing"

# Under mpirun: same result, logs from every rank with --log-all-ranks.
run $MPQ_MPIEXEC -np 2 "$MPQ_BIN" check "$CFG" --log-all-ranks --json
expect_rc 0
expect_err "^\[0/2\] .*configuration is valid"
expect_err "^\[1/2\] .*configuration is valid"
[ "$(grep -c '^{' "$OUT")" -eq 1 ] || fail "the JSON line must be printed once (by rank 0)"

run $MPQ_MPIEXEC -np 2 "$MPQ_BIN" check "$T/bad.cfg"
expect_rc 1
expect_once "mpquant: error \(rank 0 of 2\): .*unknown key 'model.tokeniser'"

finish
