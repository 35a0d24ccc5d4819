#!/bin/bash
# Registries at the command line: `check --keys` lists, for every key that
# names a variant, the same names that an unknown value of that key is told
# to choose from (both come from the variant's registry), and they include
# the variants every build has; unknown export and inspect formats list the
# registries' names.
set -u
. "$(dirname "$0")/../lib.sh"

CFG="$MPQ_SOURCE_DIR/configs/default.cfg"

run "$MPQ_BIN" check --keys
expect_rc 0
cp "$OUT" "$OUT.keys"
trap 'rm -f "$OUT" "$ERR" "$OUT.keys"' EXIT

# key, then names the registry must hold (a subset, in order)
while read -r key names; do
    allowed=$(awk -F' *\\| *' -v k="\`$key\`" '$2 == k { print $5 }' "$OUT.keys")
    [ -n "$allowed" ] || fail "check --keys: no allowed values for $key"
    for n in ${names//,/ }; do
        case ",$allowed," in
        *",$n,"*) ;;
        *) fail "check --keys: $key lists '$allowed', without '$n'" ;;
        esac
    done
    [ "$key" = model.cnn ] && continue # an op list: set in the file only
    run "$MPQ_BIN" check "$CFG" --no-paths -o "$key=no-such-variant"
    expect_rc 1
    expect_err "$key: 'no-such-variant' is not one of ${allowed//,/\\|}\$"
    # Every listed name is accepted.
    for n in ${allowed//,/ }; do
        run "$MPQ_BIN" check "$CFG" --no-paths -o "$key=$n"
        expect_rc 0
    done
done <<'LIST'
model.format auto,llama2c,mpqckpt,safetensors
model.family auto,llama,cnn
model.cnn conv2d,batchnorm,relu,maxpool,flatten,linear
hessian.scalapack auto,always,never
quant.method rtn,gptq,adaround,signround
calibration.source text,images,random,generated
robust.nonfinite error,skip
LIST

run "$MPQ_BIN" export "$CFG" --format onnx --output "$OUT.x"
expect_rc 2
expect_err "export: unknown --format 'onnx' \(known: safetensors, llama2c, gguf, gptq, gptq-v2\)"

run "$MPQ_BIN" inspect "$CFG" --format onnx
expect_rc 2
expect_err "inspect: unknown --format 'onnx' \(known: auto, llama2c, mpqckpt, gguf, gptq, safetensors, idx, tokenizer\)"

finish
