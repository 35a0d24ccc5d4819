# sweep_cfg.sh: sourced by the sweep tests. lm_sweep_cfg FILE DOCS SWEEP
# writes the small stories260K sweep configuration they share (RTN, int g32
# at 2 and 4 bits, 8 calibration segments of 64 tokens, FP propagation,
# error scores) evaluating DOCS documents, with SWEEP as its sweep section.
lm_sweep_cfg() {
    cat >"$1" <<CFG
model = { path = "\${MPQ_SHARED_DIR}/data/models/stories260K/stories260K.bin";
          tokenizer = "\${MPQ_SHARED_DIR}/data/models/stories260K/tok512.bin"; };
calibration = { source = "text"; text = "\${MPQ_SHARED_DIR}/data/text/wikitext2-valid.txt";
                seq_len = 64; segments = 8; propagate = "fp"; };
quant = { method = "rtn"; candidates = [ "int:bits=2,sym=false,group=32",
          "int:bits=4,sym=false,group=32" ]; };
importance = { method = "error"; };
eval = { text = "\${MPQ_SHARED_DIR}/data/text/tinyshakespeare.txt"; docs = $2; };
sweep = $3;
CFG
}
