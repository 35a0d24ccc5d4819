#!/bin/bash
# test_run_defaults.sh: a budget without quant.candidates selects mixed
# precision over the default candidates: asymmetric int at 2, 3, 4 and 8
# bits with quant.spec's granularity (mnist-cnn-small, per channel, at 2.5
# bits per weight: the JSON says mode "mixed", lists exactly those four
# specs, and stays within the budget). Every rounded layer is logged and
# has a round_layer event with method, quantizer, bits, group, RTN loss,
# loss, iterations, time and settings. A non-int quant.spec with a budget
# and no candidates is refused, naming quant.spec. eval.enabled = false runs
# no evaluation (no forward pass after rounding; eval.images may be "") and
# leaves the JSON's fp and quantized empty. A budget below the smallest
# achievable size is refused before calibration, with the achievable range
# (the solver's own figures: 2.067961 to 8.090026 bits per weight).
# Uniform RTN with minmax fits reads no calibration data unless
# round.rtn_loss is set: the log says so, no calibrate stage runs, every
# layer's loss is null; its codes are those of the calibrated RTN run
# (minmax fits do not read diag H: the exported weights are the same bytes)
# and so are its evaluation figures. A fit weighted by diag H (search)
# still calibrates and reports the losses. GPTQ with round.rtn_guard =
# false measures no RTN loss (every layer's rtn_loss null, the log says
# rtn_loss=nan) and, in a layer whose rows the guarded run all kept, gives
# the same loss.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/mnist-cnn-small/model-mnist.safetensors
need_shared data/mnist/t10k-images-idx3-ubyte
need_jq
common=(-o quant.method=rtn -o eval.count=500 -o eval.also_all=false -o importance.method=error)

make_work_dir
# The shipped 2-bit configuration with the minmax fit (rtn with it reads no
# calibration data unless asked) and the layer loss.
cfg="$dir/w2.cfg"
sed 's/,fit=search"/"/; /^  loss = "block";/d' "$MPQ_SOURCE_DIR/configs/mnist-cnn-small-w2.cfg" >"$cfg"
grep -v '^#' "$cfg" | grep -q 'fit=search\|loss = "block"' && fail "could not edit the configuration"
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$cfg" --json -o budget.avg_bits=2.5 "${common[@]}" \
    -o log.event_log="$dir/events.jsonl"
expect_rc 0
# every rounded layer: one log line and one round_layer event with its figures
expect_err "^round fc1: rtn int:bits=[2348],sym=false,gran=channel,scale=fp16,fit=minmax bits=[2348] group=0 rtn_loss=[0-9.e+-]+ loss=[0-9.e+-]+ \(x[0-9.]+\) iters=0 guarded_rows=[0-9]+ time=[0-9.]+s$"
n=$(jq -c 'select(.event == "round_layer") | select(has("layer") and has("method") and has("quantizer")
    and has("bits") and has("group") and has("rtn_loss") and has("loss") and has("iters")
    and has("time_s") and has("settings"))' "$dir/events.jsonl" | wc -l)
# 3 layers x 4 candidates measured, then 3 final roundings
[[ $n -ge 15 ]] || fail "round_layer events with every field: $n, expected at least 15"
j=$(last_json)
[[ $(jq -r .mode <<<"$j") == mixed ]] || fail "mode is not mixed: $(jq -c .mode <<<"$j")"
want='["int:bits=2,sym=false,gran=channel,scale=fp16,fit=minmax","int:bits=3,sym=false,gran=channel,scale=fp16,fit=minmax","int:bits=4,sym=false,gran=channel,scale=fp16,fit=minmax","int:bits=8,sym=false,gran=channel,scale=fp16,fit=minmax"]'
[[ $(jq -c .candidates <<<"$j") == "$want" ]] || fail "default candidates: $(jq -c .candidates <<<"$j")"
jq -e '.bpw <= 2.5 and .bpw > 2.0' <<<"$j" >/dev/null || fail "bpw $(jq .bpw <<<"$j") not in (2, 2.5]"

run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$cfg" -o budget.avg_bits=4.5 -o quant.spec=fp4:group=32 "${common[@]}"
expect_rc 1
expect_err "quant.spec \"fp4:group=32\" is not an int spec"

run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$cfg" --json "${common[@]}" -o eval.enabled=false \
    -o eval.images= -o eval.labels=
expect_rc 0
j=$(last_json)
[[ $(jq -c '[.fp, .quantized]' <<<"$j") == '[{},{}]' ]] ||
    fail "eval.enabled=false: fp and quantized are $(jq -c '[.fp, .quantized]' <<<"$j")"
grep -q "classifying images" "$ERR" && fail "eval.enabled=false: the model was evaluated"
expect_out "^evaluation +- +off +-$"

run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$cfg" "${common[@]}" -o budget.avg_bits=1.0 \
    -o log.event_log="$dir/events-infeasible.jsonl"
expect_rc 1
expect_err "budget.avg_bits: budget: a budget of 9064 bits = 1.000000 bits/weight \(1133 bytes\) is infeasible for the 3 quantized layers: the smallest achievable size is 2.067961 bits/weight \(2343 bytes\), the largest is 8.090026 bits/weight \(9166 bytes\)"
jq -e 'select(.event == "stage_start") | select(.stage == "calibrate" or .stage == "hessian")' \
    "$dir/events-infeasible.jsonl" >/dev/null &&
    fail "an infeasible budget was refused only after calibration started"
for mode in free calibrated; do
    extra=()
    [[ $mode == calibrated ]] && extra=(-o round.rtn_loss=true)
    run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$cfg" --json "${common[@]}" "${extra[@]}" \
        -o output.path="$dir/$mode.h5" -o log.event_log="$dir/events-$mode.jsonl"
    expect_rc 0
    [[ $mode == free ]] && expect_err "^calibration: none \(rtn with minmax fits and no losses"
    cp "$OUT" "$dir/out-$mode"
    run "$MPQ_BIN" export "$dir/$mode.h5" --format safetensors --no-config --output "$dir/$mode.st"
    expect_rc 0
done
grep -q "calibration: none" "$ERR" && fail "round.rtn_loss=true: calibration skipped"
jq -e 'select(.event == "stage_start") | select(.stage == "calibrate")' \
    "$dir/events-free.jsonl" >/dev/null && fail "rtn without losses: a calibrate stage ran"
jfree=$(tail -n 1 "$dir/out-free")
jcal=$(tail -n 1 "$dir/out-calibrated")
jq -e '[.layers[] | select(.spec != "fp") | .loss] | length == 3 and all(. == null)' \
    <<<"$jfree" >/dev/null || fail "rtn without losses: layer losses $(jq -c '[.layers[].loss]' <<<"$jfree")"
jq -e '[.layers[] | select(.spec != "fp") | .loss] | length == 3 and all(. > 0)' \
    <<<"$jcal" >/dev/null || fail "round.rtn_loss=true: layer losses $(jq -c '[.layers[].loss]' <<<"$jcal")"
cmp -s "$dir/free.st" "$dir/calibrated.st" ||
    fail "rtn without calibration: weights differ from the calibrated rtn run"
[[ $(jq -c .quantized <<<"$jfree") == $(jq -c .quantized <<<"$jcal") ]] ||
    fail "rtn without calibration: evaluation $(jq -c .quantized <<<"$jfree") vs $(jq -c .quantized <<<"$jcal")"
run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$cfg" --json "${common[@]}" \
    -o quant.spec=int:bits=2,sym=false,gran=channel,scale=fp16,fit=search
expect_rc 0
grep -q "calibration: none" "$ERR" && fail "rtn with fit=search: calibration skipped"
jq -e '[.layers[] | select(.spec != "fp") | .loss] | all(. > 0)' <<<"$(last_json)" >/dev/null ||
    fail "rtn with fit=search: layer losses $(jq -c '[.layers[].loss]' <<<"$(last_json)")"
# GPTQ without the guard: with full-precision propagation every layer's H
# is that of the guarded run, so a layer whose rows the guard all kept has
# the same loss (the same codes); conv1 (9 columns) has guarded rows.
for g in true false; do
    run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$cfg" --json "${common[@]}" -o quant.method=gptq \
        -o round.rtn_guard=$g -o calibration.propagate=fp -o eval.enabled=false \
        -o log.event_log="$dir/events-guard-$g.jsonl"
    expect_rc 0
    [[ $g == false ]] && expect_err "^round fc1: gptq .* rtn_loss=nan loss=[0-9.e+-]+ "
    cp "$OUT" "$dir/out-guard-$g"
done
joff=$(tail -n 1 "$dir/out-guard-false")
jq -e '[.layers[] | select(.spec != "fp") | .rtn_loss] | length == 3 and all(. == null)' \
    <<<"$joff" >/dev/null || fail "round.rtn_guard=false: RTN losses $(jq -c '[.layers[].rtn_loss]' <<<"$joff")"
same=$(jq -s -c '[.[] | select(.event == "round_layer")] | group_by(.layer)
    | map(select(.[0].guarded_rows == 0) | [.[0].loss, .[1].loss])' \
    "$dir/events-guard-true.jsonl" "$dir/events-guard-false.jsonl")
jq -e 'length >= 2 and all(.[0] == .[1])' <<<"$same" >/dev/null ||
    fail "round.rtn_guard=false: unguarded layers' losses (on, off): $same"
finish
