/* mpq_ckpt.h: the quantized checkpoint: one HDF5 file written collectively
 * by all ranks (parallel HDF5 over MPI-IO), its reader, and the model-format
 * reader that lets `mpquant eval` / `inspect` open it like any other model.
 *
 * ---- Layout, version 1 ------------------------------------------------------
 *
 *   /                        attrs  format = "mpquant-checkpoint", version = 1 (int32)
 *   /arch                    group; attrs: every mpq_arch field: family, format,
 *                            model_type (strings); dim, hidden_dim, n_layers, n_heads,
 *                            n_kv_heads, head_dim, vocab_size, seq_len (int64);
 *                            norm_eps, rope_theta (double); tied_embeddings, qkv_bias,
 *                            rope_interleaved, o_bias (int32); rope_scaling ("none",
 *                            "linear", "llama3", "dynamic"), rope_factor, rope_low_freq_factor,
 *                            rope_high_freq_factor (double), rope_original_max_position
 *                            (int64); the last six may be absent (no o bias, no scaling)
 *   /layers/<tensor name>    group, one per quantized layer; attrs:
 *       index      int64   position among all entries (layers and tensors) in
 *                          write order (the reader restores that order)
 *       spec       string  canonical quantizer spec (mpq_qspec_format), which holds
 *                          every parameter of the quantizer
 *       quantizer  string  quantizer family ("int", "nf4", ...)
 *       code_bits  int32   bits per code before packing
 *       group      int64   columns per scale group (0: per-tensor or per-channel)
 *       rows, cols int64   the weight as a GEMM matrix [out][in]
 *       shape      int64[] the tensor's own shape (e.g. a conv's [co][ci][kh][kw])
 *       bits       int64   storage: 8 * (bytes of codes + bytes of params), as stored
 *       method     string  rounding method ("rtn", "gptq", ...)
 *       loss       double  the layer objective of the stored codes (NaN: unknown)
 *     the layout (stages/checkpoint/README.md, "Reading a checkpoint without
 *     mpquant"; absent from older files, then derived from spec; checked on read):
 *       packing    string  "bits" or "base3"
 *       scale_format string "fp16", "fp32", "e8m0" or "e4m3"
 *       group_cols, groups_per_row, n_groups  int64  group of (r, c):
 *                          r * groups_per_row + c / group_cols
 *       params_layout string the sections of params, e.g. "scale:fp16[18]; zero:u4[18]"
 *       dequant    string  e.g. "w = scale[g] * (levels[code] - zero[g])"
 *       levels     float32 [2^code_bits] (signed binary [2][2]) level of each code
 *     codes_crc32, params_crc32  uint32  CRC-32 (zlib) of the bytes of codes and
 *                          params (absent from older files: not checked)
 *     codes_coding string  optional: "fixed" (also when absent) or "zstd": codes
 *                          then holds one zstd frame of the codes in byte-aligned
 *                          fields (stages/checkpoint/README.md, "Entropy-coded codes")
 *     codes      uint8 [ceil(rows * cols * code_bits / 8)]  packed code stream,
 *                row-major, LSB first (mpq_quant_pack; 5 codes per byte for base3);
 *                with a zstd codes_coding the zstd frame, of any length
 *     params     uint8 [mpq_qparams_nbytes]  scales and zero-points as stored
 *                (mpq_qparams_serialize, little-endian): one scale per group
 *                (fp16 / fp32 / e8m0 / e4m3), then the zero-points packed at
 *                code_bits each (asymmetric int only), then channel signs at
 *                1 bit per row (signed binary only), then one fp32 per tensor
 *                (NVFP4 tensor scale, power-exponent a) where the family has it
 *   /tensors/<tensor name>   dataset in the tensor's shape, every non-quantized
 *                            tensor as is: F32 as IEEE little-endian float, F16 and
 *                            BF16 as their uint16 bit patterns; attrs dtype ("F32",
 *                            "F16", "BF16"), index (int64, as above), folded
 *                            (string, optional: a CNN's BN folding), crc32
 *                            (uint32, CRC-32 of the little-endian data; absent
 *                            from older files)
 *   /provenance              group; attrs program_version, commit, date (ISO 8601
 *                            UTC) strings, nranks (int64); string datasets:
 *       config       the effective configuration: every key with the value the
 *                    run used (the file's values, the defaults and the -o
 *                    overrides applied), the text `mpquant check` prints
 *                    (mpq_config_print), which mpquant reads back as a
 *                    configuration file
 *       config_file  the configuration file's own text, as read
 *       overrides    JSON array of the -o overrides "key=value", in order
 *       inputs       JSON object {input path: SHA-256 hex} of every file the
 *                    run read (mpquant run: the configuration file, the model,
 *                    tokenizer, calibration, evaluation, hessian.load and
 *                    measure.load files it used); a directory input is listed
 *                    file by file ("dir/file"); a path given twice once
 *       stage_times  JSON (per-stage seconds)
 *       eval         JSON (evaluation results)
 *       assignment   JSON (per-layer table: layer, spec, bits, score, ...)
 *
 * Strings are fixed-length (NUL-padded) HDF5 strings: parallel HDF5 cannot
 * write variable-length data. Tensor names may not contain '/'.
 *
 * Determinism: every rank creates every object with the same arguments in
 * the same order, object timestamps are off, datasets are contiguous and
 * allocated at creation, and the data of a layer is written by its owner
 * rank alone. The file is therefore the same bytes for any number of ranks
 * except for the fields that legitimately differ between runs: the
 * provenance attributes date and nranks and the dataset stage_times (written
 * last, so that their length changes nothing before them).
 *
 * Atomicity: the file is created under a temporary name in the destination's
 * directory (mpq_outfile.h: ".<name>.tmp.<pid>.<random hex>") and renamed to
 * the destination only after every rank has closed it and all agreed. A run
 * killed while writing never leaves a file at the output name; its temporary
 * may remain and can be deleted by hand. An existing destination is never
 * replaced unless overwrite is set; the destination may not be an input.
 * (mpquant run checks both before it loads anything, and again here.)
 */
#ifndef MPQ_CKPT_H
#define MPQ_CKPT_H

#include <stdint.h>

#include "mpq_ctx.h"
#include "mpq_model.h"
#include "mpq_quant.h"
#include "mpq_registry.h"

#define MPQ_CKPT_FORMAT  "mpquant-checkpoint"
#define MPQ_CKPT_VERSION 1

/* ---- writer ----------------------------------------------------------------- */

typedef struct mpq_ckpt_writer mpq_ckpt_writer;

/* Collective. Checks the destination (directory writable; not an input; not
 * existing unless overwrite), hashes every input file on rank 0 (SHA-256; a
 * directory: each regular file in it), creates the temporary file and opens
 * it with the MPI-IO driver on ctx->comm (a serial context uses the default
 * driver), then writes the root attributes. inputs [n_inputs] matters on
 * rank 0 only. On error nothing remains on disk. Owner: caller, who ends it
 * with mpq_ckpt_commit or mpq_ckpt_abort. */
mpq_err mpq_ckpt_writer_create(mpq_ctx *ctx, const char *path, int overwrite,
                               const char *const *inputs, int64_t n_inputs, mpq_ckpt_writer **out);

/* Like mpq_ckpt_writer_create, with the input hashes already taken: hashes
 * (rank 0) is the JSON text mpq_ckpt_hash_inputs made of the same inputs;
 * NULL: hash them now. */
mpq_err mpq_ckpt_writer_create_hashed(mpq_ctx *ctx, const char *path, int overwrite,
                                      const char *const *inputs, int64_t n_inputs,
                                      const char *hashes, mpq_ckpt_writer **out);

/* Local. *json = the JSON object {path: SHA-256 hex} of the inputs as the
 * provenance records them (a directory file by file, sorted; a path given
 * twice once). Owner: caller (mpq_free). */
mpq_err mpq_ckpt_hash_inputs(mpq_ctx *ctx, const char *const *inputs, int64_t n, char **json);

/* Local, with the same coding on every rank: how the layers written after
 * it store their codes. "fixed" (the default): the packed code stream;
 * "zstd": per layer the smaller of the packed stream and a zstd frame of
 * the codes, named by the layer's attribute codes_coding
 * (stages/checkpoint/README.md). */
mpq_err mpq_ckpt_writer_set_coding(mpq_ctx *ctx, mpq_ckpt_writer *w, const char *coding);

/* The stored bits of the last layer written, 8 * (codes + params dataset
 * bytes): the real size with coding on; the same on every rank. */
int64_t mpq_ckpt_writer_last_bits(const mpq_ckpt_writer *w);
/* Local. *bits = the storage bits of layer l as a writer with zstd coding
 * stores it: the smaller of its fixed and zstd-coded codes, plus its
 * parameters (what mpq_ckpt_writer_last_bits then reports for it). */
mpq_err mpq_ckpt_coded_bits(mpq_ctx *ctx, const mpq_qlayer *l, int64_t *bits);

/* Collective. Writes /arch from rank 0's *arch. */
mpq_err mpq_ckpt_write_arch(mpq_ctx *ctx, mpq_ckpt_writer *w, const mpq_arch *arch);

/* What the checkpoint records about a quantized layer besides its codes and
 * parameters. */
typedef struct mpq_ckpt_layer_desc {
    const char *tensor;               /* canonical name of the weight tensor it replaces */
    int ndim;                         /* the tensor's shape; 0: [rows][cols] */
    int64_t shape[MPQ_TENSOR_MAXDIM]; /* product must equal rows * cols */
    const char *method;               /* rounding method; NULL: "" */
    double loss;                      /* layer objective; NaN when unknown */
} mpq_ckpt_layer_desc;

/* Collective: every rank calls it for every layer in the same order.
 * desc and l matter on rank `owner` only (others may pass NULL): the owner
 * broadcasts the metadata, every rank creates /layers/<tensor> with its
 * attributes and datasets, and the owner writes codes and params. */
mpq_err mpq_ckpt_write_layer(mpq_ctx *ctx, mpq_ckpt_writer *w, const mpq_ckpt_layer_desc *desc,
                             const mpq_qlayer *l, int owner);

/* Collective, like mpq_ckpt_write_layer: writes /tensors/<t->name> with t's
 * data in its own dtype. t matters on rank `owner` only. */
mpq_err mpq_ckpt_write_tensor(mpq_ctx *ctx, mpq_ckpt_writer *w, const mpq_tensor *t, int owner);

/* Longest `folded` note (NUL included). */
#define MPQ_CKPT_NOTE_MAX 160
/* Like mpq_ckpt_write_tensor, with note (the owner's; NULL or "": none)
 * as the tensor's string attribute `folded`: why its values are not the
 * source model's (a CNN's BN folding). */
mpq_err mpq_ckpt_write_tensor_noted(mpq_ctx *ctx, mpq_ckpt_writer *w, const mpq_tensor *t,
                                    int owner, const char *note);

/* Collective. Writes every tensor of model m in the model's order: the
 * tensor named by descs[i].tensor (i < n) as quantized layer qlayers[i],
 * whose data matter on rank owners[i] only; every other tensor as is,
 * written by rank (its position % size). descs and owners must be the same
 * on every rank; every desc must name a tensor of m. */
mpq_err mpq_ckpt_write_model(mpq_ctx *ctx, mpq_ckpt_writer *w, const mpq_model *m, int64_t n,
                             const mpq_ckpt_layer_desc *descs, const mpq_qlayer *const *qlayers,
                             const int *owners);

/* Provenance texts (rank 0's values are written; NULL: empty, or "{}" /
 * "[]" for the JSON fields; date NULL: now, UTC). */
typedef struct mpq_ckpt_provenance {
    const char *config;      /* effective configuration (what ran: file, defaults, overrides) */
    const char *config_file; /* the configuration file's own text */
    const char *overrides;   /* JSON array of the command-line overrides "key=value" */
    const char *date;        /* ISO 8601, e.g. "2024-05-01T12:00:00Z" */
    const char *stage_times; /* JSON */
    const char *eval;        /* JSON */
    const char *assignment;  /* JSON */
} mpq_ckpt_provenance;

/* Collective. Writes /provenance (with the input hashes taken at creation,
 * MPQ_VERSION, the git commit and ctx->size). Call once, after the layers. */
mpq_err mpq_ckpt_write_provenance(mpq_ctx *ctx, mpq_ckpt_writer *w, const mpq_ckpt_provenance *p);

/* Collective. Closes the file on every rank, agrees, and rank 0 renames it
 * into place. On error the temporary is removed. Always releases *w. */
mpq_err mpq_ckpt_commit(mpq_ctx *ctx, mpq_ckpt_writer **w);

/* Collective. Closes and removes the temporary file; releases *w. NULL-safe
 * (when *w is NULL on every rank). */
void mpq_ckpt_abort(mpq_ctx *ctx, mpq_ckpt_writer **w);

/* ---- reader (local) --------------------------------------------------------- */

/* One entry of a checkpoint: a quantized layer or a plain tensor. */
typedef struct mpq_ckpt_entry {
    char name[MPQ_TENSOR_NAME_MAX]; /* canonical tensor name */
    int quantized;                  /* 1: /layers/<name>; 0: /tensors/<name> */
    int64_t index;                  /* write order */
    mpq_dtype dtype;                /* tensors: stored dtype; layers: F32 (dequantized) */
    int ndim;
    int64_t shape[MPQ_TENSOR_MAXDIM];
    int64_t numel;
    /* quantized layers only */
    mpq_qspec spec;
    char spec_text[MPQ_QSPEC_MAX];
    int64_t rows, cols;
    int64_t codes_bytes, params_bytes; /* lengths of the stored datasets */
    int coding;                        /* MPQ_CKPT_CODING_* of codes (0: fixed) */
    int64_t bits;                      /* 8 * (codes_bytes + params_bytes) */
    /* CRC-32 recorded for the codes and params (tensors: the data, in
     * codes_crc); -1 in files written before checksums (not checked) */
    int64_t codes_crc, params_crc;
    char method[32];
    double loss;
} mpq_ckpt_entry;

typedef struct mpq_ckpt {
    char *path;
    int version;
    mpq_arch arch; /* as written (arch.format: the source model's format) */
    int64_t nentries;
    mpq_ckpt_entry *entries; /* [nentries] in write order */
    int64_t nlayers;         /* entries with quantized = 1 */
    /* provenance (NUL-terminated, "" when absent) */
    char *config, *config_file, *overrides, *inputs, *stage_times, *eval, *assignment;
    char program_version[32], commit[48], date[48];
    int64_t nranks;
    int64_t h5file; /* private: the open HDF5 file (hid_t) */
} mpq_ckpt;

/* 1 when the file at path starts with the HDF5 signature. Local. */
int mpq_ckpt_probe(const char *path);

/* Local. Opens a checkpoint read-only and validates its layout: format and
 * version, the architecture, every layer's spec, shape and dataset lengths,
 * every tensor's dtype and shape. Errors name the file and the object.
 * Owner: caller (mpq_ckpt_close). */
mpq_err mpq_ckpt_open(mpq_ctx *ctx, const char *path, mpq_ckpt **out);
/* NULL-safe; sets *ck to NULL. */
void mpq_ckpt_close(mpq_ckpt **ck);

/* Index of the entry named `name`, or -1. */
int64_t mpq_ckpt_find(const mpq_ckpt *ck, const char *name);

/* Local. Rebuilds quantized entry i as a layer (codes unpacked and checked,
 * parameters deserialized). Owner: caller (mpq_qlayer_destroy). */
mpq_err mpq_ckpt_read_layer(mpq_ctx *ctx, const mpq_ckpt *ck, int64_t i, mpq_qlayer **out);

/* Local. out [rows][cols] = the dequantized weight of layer `name`. */
mpq_err mpq_ckpt_dequantize_layer(mpq_ctx *ctx, const mpq_ckpt *ck, const char *name, float *out);

/* Local. Reads plain tensor entry i into out [numel] in its stored dtype. */
mpq_err mpq_ckpt_read_tensor(mpq_ctx *ctx, const mpq_ckpt *ck, int64_t i, void *out);

/* Sum of 8 * (codes + params bytes) over the layers, from the stored
 * dataset lengths, and the number of quantized weights. */
void mpq_ckpt_stored_bits(const mpq_ckpt *ck, int64_t *bits, int64_t *weights);

/* ---- exports (local: one process writes) ------------------------------------------ */

/* Writes every tensor of m, converted to F32, as one safetensors file
 * (8-byte little-endian header length, JSON header with __metadata__
 * {"format": "pt"} padded with spaces to a multiple of 8, tensors
 * contiguous from offset 0 in model order). For Llama models whose q/k rows
 * are in interleaved RoPE order (llama2.c), those rows are permuted to the
 * Hugging Face rotate-half order, and with write_config a Hugging Face
 * config.json is written beside the file, so that Hugging Face tools and
 * mpquant's own safetensors reader run the same network. Both files are
 * written atomically; existing ones are kept unless overwrite; neither may
 * be an input (the model's file, its config.json). */
mpq_err mpq_export_safetensors(mpq_ctx *ctx, const mpq_model *m, const char *path, int overwrite,
                               int write_config);

/* Writes a Llama model as a llama2.c legacy checkpoint (7 int32, fp32
 * arrays, RoPE tables; negative vocab_size when the classifier is not
 * shared), the format llama2.c's run.c reads. Rotate-half q/k rows are
 * permuted back to interleaved pairs. Models llama2.c cannot express
 * (q/k/v or o biases, head_dim != dim / n_heads, norm_eps != 1e-5, rope_theta
 * != 10000, RoPE scaling) are refused with the reason. Atomic; overwrite as above. */
mpq_err mpq_export_llama2c(mpq_ctx *ctx, const mpq_model *m, const char *path, int overwrite);

/* Options of an export. */
typedef struct mpq_export_opts {
    int overwrite;         /* replace existing output files */
    int write_config;      /* safetensors: config.json beside the file (Llama layout only) */
    const char *tokenizer; /* a tokenizer to embed or copy (gguf); NULL: none given */
    int lossy;             /* quantized formats: convert layers the target cannot hold
                              exactly, reporting the added error, instead of refusing */
    int kquants;           /* gguf: int4 / int5 group-32 layers as Q4_K / Q5_K (with rows
                              of a multiple of 256) instead of Q4_0/Q4_1 / Q5_0/Q5_1 */
} mpq_export_opts;

/* An export format (`mpquant export --format NAME`). Local. */
typedef struct mpq_export_format {
    const char *name;
    const char *summary; /* one line, for help and messages */
    mpq_err (*write)(mpq_ctx *ctx, const mpq_model *m, const char *path, const mpq_export_opts *o);
} mpq_export_format;

/* The registry (NULL-terminated): safetensors, llama2c, gguf, gptq, gptq-v2; its descriptor and
 * lookup by name (NULL when unknown). */
extern const mpq_export_format *const mpq_export_formats[];
extern const mpq_export_format mpq_export_gguf;    /* ckpt_gguf.c */
extern const mpq_export_format mpq_export_gptq;    /* ckpt_gptq.c: v1 zeros */
extern const mpq_export_format mpq_export_gptq_v2; /* ckpt_gptq.c: gptq_v2 */
extern const mpq_registry mpq_export_format_reg;
const mpq_export_format *mpq_export_format_find(const char *name);

/* Collective: rank 0 opens the model at `in` (any format; a checkpoint
 * gives its quantized layers to the quantized formats) and writes it to
 * `out` as fmt; every rank returns the agreed outcome. *ntensors (rank 0;
 * may be NULL): tensors of the model. */
mpq_err mpq_export_run(mpq_ctx *ctx, const char *in, const mpq_export_format *fmt, const char *out,
                       const mpq_export_opts *o, int64_t *ntensors);

/* Local. Splits an output.exports entry "FORMAT:PATH" (where: the error's
 * prefix, e.g. "run.cfg: output.exports[1]"): *fmt the registered format,
 * *path points into entry. */
mpq_err mpq_export_entry_parse(mpq_ctx *ctx, const char *where, const char *entry,
                               const mpq_export_format **fmt, const char **path);

#endif
