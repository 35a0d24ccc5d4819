#!/bin/bash
# test_layout.sh: the source tree keeps its layers (label layout).
#
# Layers, lowest first: runtime, config, stages, driver, cli. A source file
# may include the public headers (include/) of its own layer and of the
# layers below it, never above; a stage uses another stage only through its
# public header. A header outside include/ is internal: only sources of the
# same folder include it. Also checked:
#  - every source lies in a known folder: pipeline/{runtime,config,driver,cli}
#    or stages/{loading,calibrate,hessian,quant,round,importance,budget,
#    checkpoint,evaluate}; nothing loose in pipeline/ or stages/ but scripts
#    and READMEs;
#  - every public header is assigned to a layer below (a new header must be);
#  - no source file over 800 lines, no function over 150 lines;
#  - prototypes live in headers: no non-static function declaration and no
#    `extern` in a .c file.
#   bash test_layout.sh [SOURCE_DIR]    (default: $MPQ_SOURCE_DIR)
set -u
src=${1:-$MPQ_SOURCE_DIR}
cd "$src" || exit 1
fails=0
bad() {
    echo "layout: $*" >&2
    fails=$((fails + 1))
}

# Layer of each public header.
declare -A hlayer=(
    [mpq_err.h]=runtime [mpq_ctx.h]=runtime [mpq_coll.h]=runtime [mpq_log.h]=runtime
    [mpq_timer.h]=runtime [mpq_outfile.h]=runtime [mpq_infile.h]=runtime [mpq_h5.h]=runtime
    [mpq_hash.h]=runtime [mpq_robust.h]=runtime [mpq_stop.h]=runtime [mpq_scalapack.h]=runtime
    [mpq_version.h]=runtime [mpq_registry.h]=runtime [mpq_expf.h]=runtime
    [mpq_config.h]=config
    [mpq_model.h]=stages [mpq_model_format.h]=stages [mpq_family.h]=stages [mpq_tokenizer.h]=stages [mpq_text.h]=stages
    [mpq_idx.h]=stages [mpq_calibrate.h]=stages [mpq_hessian.h]=stages [mpq_quant.h]=stages
    [mpq_round.h]=stages [mpq_importance.h]=stages [mpq_budget.h]=stages [mpq_ckpt.h]=stages
    [mpq_eval.h]=stages
    [mpq_run.h]=driver [mpq_sweep.h]=driver [mpq_session.h]=driver
    [mpq_cli.h]=cli
)
declare -A rank=([runtime]=0 [config]=1 [stages]=2 [driver]=3 [cli]=4)

# Layer of a source folder.
folder_layer() {
    case "$1" in
    pipeline/runtime | pipeline/config | pipeline/driver | pipeline/cli) echo "${1#pipeline/}" ;;
    stages/loading | stages/calibrate | stages/hessian | stages/quant | stages/round | \
        stages/importance | stages/budget | stages/checkpoint | stages/evaluate) echo stages ;;
    *) echo "" ;;
    esac
}

for h in include/*.h include/*.h.in; do
    b=$(basename "$h" .in)
    [ -n "${hlayer[$b]:-}" ] || bad "$h: public header without a layer (add it to tests/layout/test_layout.sh)"
done

# Files directly in pipeline/ or stages/: only scripts and documents.
while IFS= read -r f; do
    case "$f" in
    *.sh | *.md) ;;
    *) bad "$f: a loose file; sources belong in a layer's folder" ;;
    esac
done < <(find pipeline stages -maxdepth 1 -type f | sort)

check_includes() { # FILE LAYER
    local f=$1 layer=$2 dir inc
    dir=$(dirname "$f")
    while IFS= read -r inc; do
        if [ -e "include/$inc" ] || [ -e "include/$inc.in" ]; then
            local hl=${hlayer[$inc]:-}
            [ -n "$hl" ] || continue # reported above
            if [ "${rank[$hl]}" -gt "${rank[$layer]}" ]; then
                bad "$f ($layer) includes $inc ($hl): a lower layer may not use a higher one"
            fi
        elif [ "$dir" = include ]; then
            bad "$f includes \"$inc\", which is not a public header"
        elif [ ! -e "$dir/$inc" ] || [[ "$inc" == */* ]]; then
            bad "$f includes \"$inc\": internal headers are included only from their own folder"
        fi
    done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f")
}

for h in include/*.h; do
    check_includes "$h" "${hlayer[$(basename "$h")]:-cli}"
done

while IFS= read -r f; do
    d=$(dirname "$f")
    layer=$(folder_layer "$d")
    if [ -z "$layer" ]; then
        bad "$f: not in a known folder (pipeline/{runtime,config,driver,cli}, stages/<stage>)"
        continue
    fi
    check_includes "$f" "$layer"
    n=$(wc -l <"$f")
    [ "$n" -le 800 ] || bad "$f: $n lines (at most 800)"
    case "$f" in
    *.c)
        # Function bodies: from a line opening a definition at column 0 to
        # the closing brace at column 0.
        awk -v f="$f" '
            /^[A-Za-z_][^=]*\(/ && !/;[[:space:]]*$/ && !/^(typedef|struct|enum|union)/ { cand = NR; name = $0 }
            cand && !start && /\{[[:space:]]*$/ { start = cand; cand = 0 }
            cand && /;[[:space:]]*$/ { cand = 0 }
            /^\}/ { if (start && NR - start + 1 > 150) printf "%s:%d: function of %d lines (at most 150): %s\n", f, start, NR - start + 1, name; start = 0; cand = 0 }
        ' "$f" | while IFS= read -r line; do echo "layout: $line" >&2; echo x; done | wc -l |
            { read -r k; [ "$k" -eq 0 ] || exit 1; } || bad "$f: functions over 150 lines (above)"
        # Declarations at column 0 that end in ';' before any '{': a
        # prototype or an extern outside a header.
        awk -v f="$f" '
            /^(static|typedef|#|\/\*| \*|\}|struct [A-Za-z_]+ \{|enum|union)/ { decl = ""; next }
            decl == "" && /^[A-Za-z_][A-Za-z_0-9 \*]*[ \*][A-Za-z_][A-Za-z_0-9]*\(/ { decl = $0; line = NR }
            decl != "" && /\{/ { decl = ""; next }
            decl != "" && /;[[:space:]]*$/ { printf "%s:%d: prototype in a source file: %s\n", f, line, decl; decl = "" }
            /^extern / { printf "%s:%d: extern in a source file: %s\n", f, NR, $0 }
        ' "$f" | while IFS= read -r line; do echo "layout: $line" >&2; echo x; done | wc -l |
            { read -r k; [ "$k" -eq 0 ] || exit 1; } || bad "$f: declarations that belong in a header (above)"
        ;;
    esac
done < <(find pipeline stages -mindepth 2 -type f \( -name '*.c' -o -name '*.h' \) | sort)

if [ "$fails" -eq 0 ]; then
    echo "PASSED: layout"
    exit 0
fi
echo "FAILED: $fails layout rule(s) broken"
exit 1
