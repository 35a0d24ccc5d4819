/* config_keys.c: every configuration key, its type, default, range and
 * documentation. This table is the single place where defaults are defined;
 * `mpquant check --keys` prints it as the reference (configs/REFERENCE.md).
 * Keys that name a variant (choices NULL: model.format, model.family,
 * model.cnn, hessian.scalapack, quant.method, calibration.source,
 * robust.nonfinite, importance.method, sweep.metric) take their allowed values from the variant's
 * registry (mpq_config_set_registries). */
#include <float.h>
#include <stddef.h>

#include "mpq_config.h"

#define OFF(field) offsetof(mpq_config, field)
#define NOLIM      0.0, 0.0

const mpq_key_spec mpq_config_keys[] = {
    /* model */
    {"model.path", MPQ_KEY_PATH, OFF(model.path),
     "${MPQ_SHARED_DIR}/data/models/stories260K/stories260K.bin", NOLIM, "file|dir",
     "model file (llama2.c .bin, .safetensors) or a directory holding a sharded safetensors model"},
    {"model.format", MPQ_KEY_ENUM, OFF(model.format), "auto", NOLIM, NULL,
     "checkpoint format; auto detects it from the file name and contents (mpqckpt: an mpquant "
     "quantized checkpoint)"},
    {"model.tokenizer", MPQ_KEY_PATH, OFF(model.tokenizer),
     "${MPQ_SHARED_DIR}/data/models/stories260K/tok512.bin", NOLIM, "file|dir",
     "tokenizer for language models: llama2.c tokenizer.bin, or a Hugging Face tokenizer.json "
     "or the directory holding it (\"\": the model directory's tokenizer.json when model.path "
     "is a directory holding one, else none)"},
    {"model.family", MPQ_KEY_ENUM, OFF(model.family), "auto", NOLIM, NULL,
     "model family (mpq_family.h); auto: llama for Llama checkpoints, cnn when model.cnn is set"},
    {"model.cnn", MPQ_KEY_OPLIST, OFF(model.cnn), "", NOLIM, NULL,
     "sequential CNN: ordered list of ops { op = \"conv2d\"; weight = \"...\"; ... } over named "
     "tensors (see configs/README.md: CNN description)"},
    {"model.input_shape", MPQ_KEY_FLOAT_LIST, OFF(model.input_shape), "[]", 0.0, 1e6, NULL,
     "CNN input shape [channels, height, width]"},
    {"model.input_scale", MPQ_KEY_FLOAT, OFF(model.input_scale), "1", -1e9, 1e9, NULL,
     "CNN input preprocessing: x = (raw * input_scale - input_mean[c]) / input_std[c]"},
    {"model.input_mean", MPQ_KEY_FLOAT_LIST, OFF(model.input_mean), "[]", -1e9, 1e9, NULL,
     "CNN per-channel input mean (one value for all channels, or [] for 0)"},
    {"model.input_std", MPQ_KEY_FLOAT_LIST, OFF(model.input_std), "[]", 1e-12, 1e9, NULL,
     "CNN per-channel input standard deviation (one value for all channels, or [] for 1)"},

    /* eval */
    {"eval.enabled", MPQ_KEY_BOOL, OFF(eval.enabled), "true", NOLIM, NULL,
     "mpquant run: evaluate the quantized model and full precision (false: no evaluation, "
     "no forward pass after rounding; JSON fp and quantized are empty)"},
    {"eval.text", MPQ_KEY_PATH, OFF(eval.text), "${MPQ_SHARED_DIR}/data/text/tinyshakespeare.txt",
     NOLIM, NULL,
     "language models: text file split into documents at blank lines (perplexity, KLD)"},
    {"eval.docs", MPQ_KEY_INT, OFF(eval.docs), "500", 0, 1e12, NULL,
     "language models: evaluate the first N documents, or windows (0 = all)"},
    {"eval.protocol", MPQ_KEY_ENUM, OFF(eval.protocol), "docs", NOLIM, "docs|windows|generated",
     "language models: docs (documents split at blank lines, each from BOS), windows (the "
     "whole text as one token stream in non-overlapping windows of eval.window tokens: the "
     "WikiText-2 protocol of GPTQ papers) or generated (eval.docs sequences sampled from the "
     "full-precision model itself with eval.seed: an evaluation set in the model's own "
     "training domain, no text needed)"},
    {"eval.window", MPQ_KEY_INT, OFF(eval.window), "0", 0, 1e9, NULL,
     "windows protocol: tokens per window (0 = the model's context, at most 2048); generated: "
     "tokens per sequence (0 = the model's context)"},
    {"eval.seed", MPQ_KEY_INT, OFF(eval.seed), "4321", 0, 1e15, NULL,
     "generated protocol: sampling seed (must differ from calibration.seed when the "
     "calibration is generated too, so that the two sets are apart)"},
    {"eval.temperature", MPQ_KEY_FLOAT, OFF(eval.temperature), "1", 0.0, 100.0, NULL,
     "generated protocol: sampling temperature of softmax(logits / T) (0 = greedy)"},
    {"eval.images", MPQ_KEY_PATH, OFF(eval.images),
     "${MPQ_SHARED_DIR}/data/mnist/t10k-images-idx3-ubyte", NOLIM, NULL,
     "classifiers: IDX image file"},
    {"eval.labels", MPQ_KEY_PATH, OFF(eval.labels),
     "${MPQ_SHARED_DIR}/data/mnist/t10k-labels-idx1-ubyte", NOLIM, NULL,
     "classifiers: IDX label file"},
    {"eval.first", MPQ_KEY_INT, OFF(eval.first), "0", 0, 1e12, NULL,
     "classifiers: index of the first image evaluated"},
    {"eval.count", MPQ_KEY_INT, OFF(eval.count), "0", 0, 1e12, NULL,
     "classifiers: number of images (0 = all from eval.first)"},
    {"eval.batch", MPQ_KEY_INT, OFF(eval.batch), "256", 1, 1e6, NULL,
     "classifiers: images per forward batch"},
    {"eval.generate_tokens", MPQ_KEY_INT, OFF(eval.generate_tokens), "0", 0, 1e6, NULL,
     "language models: greedy generation of N tokens from BOS after evaluating (0 = none)"},
    {"eval.reference", MPQ_KEY_PATH, OFF(eval.reference), "", NOLIM, "file|dir",
     "full-precision reference model for KL divergence and top-1 agreement (\"\" = none)"},
    {"eval.also_all", MPQ_KEY_BOOL, OFF(eval.also_all), "false", NOLIM, NULL,
     "classifiers, mpquant run: also evaluate on every image of eval.images (JSON fp_all, "
     "quantized_all)"},

    /* hessian */
    {"hessian.damping", MPQ_KEY_FLOAT, OFF(hessian.damping), "0.01", 0.0, 1e6, NULL,
     "relative damping: damping * mean(diag H) is added to the diagonal before factorising"},
    {"hessian.damping_max", MPQ_KEY_FLOAT, OFF(hessian.damping_max), "1", 0.0, 1e6, NULL,
     "a failed Cholesky is retried with damping x10 while it stays <= this; then an error"},
    {"hessian.scalapack", MPQ_KEY_ENUM, OFF(hessian.scalapack), "auto", NOLIM, NULL,
     "factorise H with ScaLAPACK over a process grid (auto: from scalapack_min_width on)"},
    {"hessian.scalapack_min_width", MPQ_KEY_INT, OFF(hessian.scalapack_min_width), "4096", 1, 1e9,
     NULL, "auto mode: layers at least this wide use ScaLAPACK, narrower ones LAPACK"},
    {"hessian.block_size", MPQ_KEY_INT, OFF(hessian.block_size), "64", 1, 4096, NULL,
     "ScaLAPACK block-cyclic block size"},
    {"hessian.chunk_samples", MPQ_KEY_INT, OFF(hessian.chunk_samples), "0", 0, 1e9, NULL,
     "calibration samples per chunk: the unit of the exact, rank-independent H reduction (0 = "
     "auto: samples / 16 so that up to 16 ranks share the work, raised to chunks of about 2048 "
     "rows, from 1 to 8 samples)"},
    {"hessian.bound_log2", MPQ_KEY_INT, OFF(hessian.bound_log2), "16", -60, 60, NULL,
     "activations must satisfy |x| <= 2^bound_log2 (fixes the fixed-point grid of H)"},
    {"hessian.save", MPQ_KEY_OUTPATH, OFF(hessian.save), "", NOLIM, NULL,
     "write the Hessian statistics to this HDF5 file (\"\" = do not save)"},
    {"hessian.load", MPQ_KEY_PATH, OFF(hessian.load), "", NOLIM, NULL,
     "read Hessian statistics from this HDF5 file instead of measuring them (\"\" = measure)"},

    /* quant */
    {"quant.spec", MPQ_KEY_STRING, OFF(quant.spec), "int:bits=4,sym=false,group=32", NOLIM, NULL,
     "quantizer spec \"family:key=value,...\" (see the quantizer reference)"},
    {"quant.method", MPQ_KEY_ENUM, OFF(quant.method), "gptq", NOLIM, NULL,
     "rounding method: nearest, Hessian GPTQ, AdaRound-style learned, signed-gradient (AutoRound)"},
    {"quant.candidates", MPQ_KEY_STRING_LIST, OFF(quant.candidates), "[]", NOLIM, NULL,
     "mixed precision (mpquant run): candidate quantizer specs per layer; [] = uniform quant.spec, "
     "or with a budget the default candidates: int asymmetric at 2, 3, 4 and 8 bits with "
     "quant.spec's granularity; \"spec;rate=LAMBDA\": gptq at spec with its own "
     "round.rate_lambda (a rate-constrained candidate)"},

    /* budget, importance, measure, output (mpquant run, mixed precision) */
    {"budget.avg_bits", MPQ_KEY_FLOAT, OFF(budget.avg_bits), "0", 0.0, 64.0, NULL,
     "budget as average bits per weight over the quantized layers, codes + scales + zero-points "
     "(0 = unset)"},
    {"budget.bytes", MPQ_KEY_INT, OFF(budget.bytes), "0", 0, 9e15, NULL,
     "budget as total bytes of the quantized layers (0 = unset; exclusive with avg_bits)"},
    {"budget.count", MPQ_KEY_ENUM, OFF(budget.count), "all", NOLIM, "all|codes|coded",
     "what avg_bits / bytes count: all = codes + scales + zero-points (the file size); codes = "
     "the packed codes only (nominal bit-width, as often quoted); coded = codes as "
     "output.code_coding = zstd stores them (measured) + scales + zero-points"},
    {"budget.pin", MPQ_KEY_STRING_LIST, OFF(budget.pin), "[]", NOLIM, NULL,
     "\"pattern=spec\" items: layers whose name matches the shell pattern get that spec"},
    {"budget.exclude", MPQ_KEY_STRING_LIST, OFF(budget.exclude), "[]", NOLIM, NULL,
     "shell patterns of layer names kept in full precision (not quantized, not in the average)"},
    {"importance.method", MPQ_KEY_ENUM, OFF(importance.method), "sensitivity", NOLIM, NULL,
     "score of a (layer, candidate): layer error, error / tr(W H W^T), or error x the model "
     "loss sensitivity to that layer"},
    {"importance.sensitivity_spec", MPQ_KEY_STRING, OFF(importance.sensitivity_spec), "", NOLIM,
     NULL, "candidate quantized alone per layer to measure sensitivities (\"\" = the smallest)"},
    {"importance.samples", MPQ_KEY_INT, OFF(importance.samples), "16", 0, 1e12, NULL,
     "sensitivity: first N calibration samples on which the KL divergence is measured (0 = all)"},
    {"measure.save", MPQ_KEY_OUTPATH, OFF(measure.save), "", NOLIM, NULL,
     "write the per-(layer, candidate) errors and bits to this HDF5 file (\"\" = do not save)"},
    {"measure.load", MPQ_KEY_PATH, OFF(measure.load), "", NOLIM, NULL,
     "reuse measurements saved by measure.save instead of measuring (\"\" = measure)"},
    {"output.path", MPQ_KEY_OUTPATH, OFF(output.path), "", NOLIM, NULL,
     "quantized checkpoint written by mpquant run (HDF5; \"\" = none)"},
    {"output.overwrite", MPQ_KEY_BOOL, OFF(output.overwrite), "false", NOLIM, NULL,
     "replace an existing output.path (and existing output.exports files)"},
    {"output.exports", MPQ_KEY_STRING_LIST, OFF(output.exports), "[]", NOLIM, NULL,
     "\"FORMAT:PATH\" exports of the checkpoint written after it, as mpquant export writes them "
     "(with model.tokenizer), e.g. [\"gguf:out/model.gguf\"]; needs output.path"},
    {"output.code_coding", MPQ_KEY_ENUM, OFF(output.code_coding), "fixed", NOLIM, "fixed|zstd",
     "storage of each layer's codes in the checkpoint: fixed-length packed codes, or zstd "
     "entropy-coded (per layer the smallest of zstd and fixed is kept; the run reports the "
     "coded size as coded_bits / coded_bpw)"},

    /* sweep (mpquant sweep, mpq_sweep.h) */
    {"sweep.budgets", MPQ_KEY_FLOAT_LIST, OFF(sweep.budgets), "[]", 0.5, 64.0, NULL,
     "mpquant sweep: average bits per weight of the mixed-precision points (solved over "
     "quant.candidates from one measurement)"},
    {"sweep.uniform", MPQ_KEY_STRING_LIST, OFF(sweep.uniform), "[]", NOLIM, NULL,
     "mpquant sweep: specs applied to every layer with quant.method ([] = each of "
     "quant.candidates)"},
    {"sweep.methods", MPQ_KEY_STRING_LIST, OFF(sweep.methods), "[]", NOLIM, NULL,
     "mpquant sweep: rounding methods compared at every sweep.compare spec ([] = no comparison)"},
    {"sweep.compare", MPQ_KEY_STRING_LIST, OFF(sweep.compare), "[]", NOLIM, NULL,
     "mpquant sweep: quantizer specs (families at fixed bits) of the method comparison ([] = "
     "sweep.uniform)"},
    {"sweep.output_dir", MPQ_KEY_OUTPATH, OFF(sweep.output_dir), "", NOLIM, "dir",
     "mpquant sweep: directory of the measurements, per-point results and report files (\"\" = "
     "sweep-out in the working directory)"},
    {"sweep.metric", MPQ_KEY_ENUM, OFF(sweep.metric), "auto", NOLIM, NULL,
     "mpquant sweep: quality axis of the report and Pareto front (auto: kld, the KL divergence "
     "from the full-precision model, for language models; accuracy for classifiers)"},
    {"sweep.plot", MPQ_KEY_BOOL, OFF(sweep.plot), "true", NOLIM, NULL,
     "mpquant sweep: draw report.png (quality against model size, Pareto front) with gnuplot"},

    /* round */
    {"round.block_size", MPQ_KEY_INT, OFF(round.block_size), "128", 1, 1e6, NULL,
     "GPTQ: columns per lazy block update"},
    {"round.act_order", MPQ_KEY_BOOL, OFF(round.act_order), "true", NOLIM, NULL,
     "GPTQ: quantize columns by decreasing Hessian diagonal"},
    {"round.static_groups", MPQ_KEY_BOOL, OFF(round.static_groups), "false", NOLIM, NULL,
     "GPTQ: fit group parameters before the column sweep instead of when a group is reached"},
    {"round.gptq_precision", MPQ_KEY_ENUM, OFF(round.gptq_precision), "auto", NOLIM,
     "auto|double|float",
     "GPTQ: precision of the weights being updated, the errors and the factor in the lazy "
     "block updates (float: SGEMM; the rounding and the loss stay in double; auto: float for "
     "layers of 1024 input columns or more, double below)"},
    {"round.iters", MPQ_KEY_INT, OFF(round.iters), "200", 1, 1e8, NULL,
     "learned rounding (adaround, signround): optimisation steps per tile"},
    {"round.lr", MPQ_KEY_FLOAT, OFF(round.lr), "0", 0.0, 1e6, NULL,
     "learning rate of the rounding variables (0 = the optimizer's default; signsgd: 1/iters)"},
    {"round.lr_scale", MPQ_KEY_FLOAT, OFF(round.lr_scale), "0", 0.0, 1e6, NULL,
     "learning rate of the scale factors (0 = the optimizer's default)"},
    {"round.lambda", MPQ_KEY_FLOAT, OFF(round.lambda), "100", 0.0, 1e6, NULL,
     "weight of the rounding regulariser lambda * sum(1 - |2h - 1|^beta) (sigmoid variable)"},
    {"round.beta_start", MPQ_KEY_FLOAT, OFF(round.beta_start), "20", 1.0, 1e3, NULL,
     "regulariser exponent beta right after the warm-up"},
    {"round.beta_end", MPQ_KEY_FLOAT, OFF(round.beta_end), "2", 1.0, 1e3, NULL,
     "regulariser exponent beta at the last step (linear annealing)"},
    {"round.warmup", MPQ_KEY_FLOAT, OFF(round.warmup), "0.2", 0.0, 1.0, NULL,
     "fraction of the steps run without the regulariser"},
    {"round.init", MPQ_KEY_ENUM, OFF(round.init), "gptq", NOLIM, "rtn|gptq",
     "learned rounding starts from nearest rounding or from the GPTQ solution"},
    {"round.optimizer", MPQ_KEY_ENUM, OFF(round.optimizer), "auto", NOLIM, "auto|adam|signsgd|sgdm",
     "optimizer of learned rounding (auto: adaround adam, signround signsgd)"},
    {"round.momentum", MPQ_KEY_FLOAT, OFF(round.momentum), "0.9", 0.0, 0.999999, NULL,
     "momentum of the sgdm optimizer"},
    {"round.learn_scales", MPQ_KEY_ENUM, OFF(round.learn_scales), "auto", NOLIM, "auto|on|off",
     "learn per-group scales with the rounding (auto: adaround off, signround on)"},
    {"round.loss", MPQ_KEY_ENUM, OFF(round.loss), "layer", NOLIM, "layer|block|network",
     "layer: each layer's rounding minimises its own output error; block: then the codes of "
     "every layer of a block are refined together against the full-precision block's output on "
     "the same calibration inputs (signed gradients through the block's backward pass; needs "
     "calibration.propagate = \"quantized\"); network: block, plus the KL divergence of the "
     "model's prediction through the later blocks and the head (round.kl_weight, round.kl_target; "
     "without round.input_drop)"},
    {"round.block_iters", MPQ_KEY_INT, OFF(round.block_iters), "200", 1, 1e7, NULL,
     "block loss: signed-gradient steps per block"},
    {"round.block_rows", MPQ_KEY_INT, OFF(round.block_rows), "2048", 0, 1e12, NULL,
     "block loss: activation rows (tokens, images) per step, in whole samples; successive "
     "steps sweep the calibration set (0 = every sample at every step)"},
    {"round.block_lr", MPQ_KEY_FLOAT, OFF(round.block_lr), "0", 0.0, 1.0, NULL,
     "block loss: step of the rounding offsets per iteration, decayed linearly to 0 (0 = 2 / "
     "block_iters)"},
    {"round.block_momentum", MPQ_KEY_FLOAT, OFF(round.block_mom), "0", 0.0, 0.999, NULL,
     "block loss: each step follows the sign of a running average of the gradient sums, "
     "m = block_momentum m + (1 - block_momentum) g, instead of its own sums' (signed steps "
     "with momentum: steps that change direction less with few rows per step; 4 more bytes "
     "per weight; not with round.block_descent; 0 = off)"},
    {"round.input_drop", MPQ_KEY_FLOAT, OFF(round.input_drop), "0", 0.0, 1.0, NULL,
     "block loss: each input element of a training step comes from the full-precision model's "
     "activations with this probability, else from the quantized model's (QDrop; the target is "
     "the full-precision block on the same mixed input; 0 = quantized inputs only); keeping "
     "the full-precision activations doubles their memory"},
    {"round.kl_weight", MPQ_KEY_FLOAT, OFF(round.kl_weight), "4", 0.0, 1e6, NULL,
     "network loss: weight of the prediction term; the loss is the block's squared error over "
     "its start value plus kl_weight times the KL divergence of the model's prediction over its "
     "start value"},
    {"round.kl_target", MPQ_KEY_ENUM, OFF(round.kl_target), "model", NOLIM, "model|block",
     "network loss: the prediction the KL term follows. model: the full-precision model's own "
     "(its block output on its own activations, through the later blocks), so that a block "
     "also makes up for the error the rounded blocks before it left; keeps the full-precision "
     "model's activations too, doubling their memory. block: the full-precision block's output "
     "on the same quantized inputs, through the later blocks"},
    {"round.block_descent", MPQ_KEY_ENUM, OFF(round.block_descent), "off", NOLIM, "off|on",
     "block loss: on: every step is judged by the loss on every calibration sample and undone "
     "when it raises it, the next one flipping fewer weights (those of the largest gradients), "
     "until 16 single flips in a row fail; needs every step to see every sample "
     "(round.block_rows = 0 or at least the calibration's rows); off: plain signed steps, the "
     "best solution measured kept"},
    {"round.block_scales", MPQ_KEY_ENUM, OFF(round.block_scales), "off", NOLIM, "off|on",
     "block loss: also learn every group's (or channel's) scale, as a factor in [0.5, 1.5] of "
     "the layer rounding's, by signed steps of its gradient (half the offsets' rate), the "
     "codes' values following; off = the codes alone"},
    {"round.learn_bias", MPQ_KEY_ENUM, OFF(round.learn_bias), "off", NOLIM, "off|on",
     "block loss: also learn a correction of the output bias of every layer with a bias slot "
     "(a CNN's conv and linear layers; Llama's q/k/v/o projections, whose checkpoint then has "
     "attention biases), by signed steps in units of the layer's output error per channel, "
     "starting at 0; off = no bias correction"},
    {"round.block_comm", MPQ_KEY_ENUM, OFF(round.block_comm), "exact", NOLIM, "exact|int8",
     "block loss: how each step's gradients are summed over ranks: exact (64-bit integers, the "
     "same bits for any rank count) or int8 (8-bit codes with a scale per 256 weights and error "
     "feedback, about 4x less traffic and 8 more bytes per weight on every rank; the same bits "
     "on every run at a given rank count, but no longer across rank counts)"},
    {"round.variable", MPQ_KEY_ENUM, OFF(round.variable), "auto", NOLIM, "auto|sigmoid|offset",
     "rounding variable (auto: adaround sigmoid, signround offset)"},
    {"round.seed", MPQ_KEY_INT, OFF(round.seed), "0", 0, 9e15, NULL,
     "seed of the initial jitter of learned rounding (see round.init_noise)"},
    {"round.init_noise", MPQ_KEY_FLOAT, OFF(round.init_noise), "0", 0.0, 0.5, NULL,
     "uniform jitter added to the initial fractional positions (0 = none)"},
    {"round.tile_rows", MPQ_KEY_INT, OFF(round.tile_rows), "128", 1, 1e9, NULL,
     "output rows per parallel rounding task (fixed, so results do not depend on the rank count)"},
    {"round.rate_lambda", MPQ_KEY_FLOAT, OFF(round.rate_lambda), "0", 0.0, 1e6, NULL,
     "gptq: rate-aware rounding for entropy-coded codes: each weight takes, of its two "
     "neighbouring grid points, the one minimising its error plus rate_lambda x its length in "
     "bits under the layer's RTN code histogram, a bit weighing the layer's mean error of "
     "nearest rounding per weight (0 = off; gptq with round.loss = layer only)"},
    {"round.rtn_guard", MPQ_KEY_BOOL, OFF(round.rtn_guard), "true", NOLIM, NULL,
     "a row whose rounding loss exceeds its nearest-rounding loss keeps nearest rounding "
     "(false: the nearest-rounding loss, a product as costly as GPTQ's updates, is not "
     "measured and reported as null)"},
    {"round.rtn_loss", MPQ_KEY_BOOL, OFF(round.rtn_loss), "false", NOLIM, NULL,
     "rtn, uniform: calibrate to measure each layer's loss (false: with minmax fits no "
     "calibration data is read and layer losses are not reported; fits weighted by diag H "
     "calibrate anyway)"},

    /* calibration */
    {"calibration.source", MPQ_KEY_ENUM, OFF(calibration.source), "text", NOLIM, NULL,
     "calibration samples: text segments (LM), IDX images (classifier), random inputs, or "
     "sequences generated by the full-precision LM itself"},
    {"calibration.text", MPQ_KEY_PATH, OFF(calibration.text),
     "${MPQ_SHARED_DIR}/data/text/tinyshakespeare.txt", NOLIM, NULL,
     "text source: file of documents separated by blank lines"},
    {"calibration.images", MPQ_KEY_PATH, OFF(calibration.images),
     "${MPQ_SHARED_DIR}/data/mnist/t10k-images-idx3-ubyte", NOLIM, NULL,
     "images source: IDX image file"},
    {"calibration.first", MPQ_KEY_INT, OFF(calibration.first), "0", 0, 1e12, NULL,
     "images source: index of the first image"},
    {"calibration.seq_len", MPQ_KEY_INT, OFF(calibration.seq_len), "256", 2, 1e7, NULL,
     "language models: tokens per calibration segment: BOS + seq_len - 1 consecutive tokens of "
     "the text's document stream (every document encoded as in evaluation)"},
    {"calibration.segments", MPQ_KEY_INT, OFF(calibration.segments), "64", 1, 1e9, NULL,
     "number of calibration samples (text segments, images or random inputs)"},
    {"calibration.seed", MPQ_KEY_INT, OFF(calibration.seed), "1234", 0, 1e15, NULL,
     "seed of the segments' start positions in the text, of the random source and of the "
     "generated source's sampling"},
    {"calibration.temperature", MPQ_KEY_FLOAT, OFF(calibration.temperature), "1", 0.0, 100.0, NULL,
     "generated source: sampling temperature of softmax(logits / T) (0 = greedy)"},
    {"calibration.propagate", MPQ_KEY_ENUM, OFF(calibration.propagate), "quantized", NOLIM,
     "quantized|fp",
     "mpquant run: block inputs come from the already-quantized blocks, or stay full precision"},

    /* log */
    {"log.level", MPQ_KEY_ENUM, OFF(log.level), "info", NOLIM, "error|warn|info|debug|trace",
     "least severe log level printed"},
    {"log.all_ranks", MPQ_KEY_BOOL, OFF(log.all_ranks), "false", NOLIM, NULL,
     "print log lines on every rank with a [rank/size] prefix (default: rank 0 only)"},
    {"log.event_log", MPQ_KEY_OUTPATH, OFF(log.event_log), "", NOLIM, NULL,
     "append machine-readable JSON-lines events (stages, progress, warnings, errors) to this file"},
    {"log.progress_interval", MPQ_KEY_FLOAT, OFF(log.progress_interval), "5", 0.1, 3600.0, NULL,
     "seconds between progress lines of long loops"},

    /* robust (mpq_robust.h) */
    {"robust.nonfinite", MPQ_KEY_ENUM, OFF(robust.nonfinite), "error", NOLIM, NULL,
     "NaN/Inf in a layer's weights: error (naming the layer), or skip: keep that layer in full "
     "precision with a warning"},
};

const int mpq_config_nkeys = (int)(sizeof mpq_config_keys / sizeof mpq_config_keys[0]);
