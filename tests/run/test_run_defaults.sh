#!/bin/bash
# test_run_defaults.sh: a budget without quant.candidates selects mixed
# precision over the default candidates: asymmetric int at 2, 3, 4 and 8
# bits with quant.spec's granularity (mnist-cnn-small, per channel, at 2.5
# bits per weight: the JSON says mode "mixed", lists exactly those four
# specs, and stays within the budget). A non-int quant.spec with a budget
# and no candidates is refused, naming quant.spec.
set -u
. "$MPQ_SOURCE_DIR/tests/lib.sh"
need_shared data/models/mnist-cnn-small/model-mnist.safetensors
need_shared data/mnist/t10k-images-idx3-ubyte
need_jq
cfg="$MPQ_SOURCE_DIR/configs/mnist-cnn-small-w2.cfg"
common=(-o quant.method=rtn -o eval.count=500 -o eval.also_all=false -o importance.method=error)

run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$cfg" --json -o budget.avg_bits=2.5 "${common[@]}"
expect_rc 0
j=$(last_json)
[[ $(jq -r .mode <<<"$j") == mixed ]] || fail "mode is not mixed: $(jq -c .mode <<<"$j")"
want='["int:bits=2,sym=false,gran=channel,scale=fp16,fit=minmax","int:bits=3,sym=false,gran=channel,scale=fp16,fit=minmax","int:bits=4,sym=false,gran=channel,scale=fp16,fit=minmax","int:bits=8,sym=false,gran=channel,scale=fp16,fit=minmax"]'
[[ $(jq -c .candidates <<<"$j") == "$want" ]] || fail "default candidates: $(jq -c .candidates <<<"$j")"
jq -e '.bpw <= 2.5 and .bpw > 2.0' <<<"$j" >/dev/null || fail "bpw $(jq .bpw <<<"$j") not in (2, 2.5]"

run $MPQ_MPIEXEC -n 2 "$MPQ_BIN" run "$cfg" -o budget.avg_bits=4.5 -o quant.spec=fp4:group=32 "${common[@]}"
expect_rc 1
expect_err "quant.spec \"fp4:group=32\" is not an int spec"
finish
