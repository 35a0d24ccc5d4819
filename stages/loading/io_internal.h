/* io_internal.h: what the model-format readers of stages/loading share and
 * nothing outside that folder needs: the layout of mpq_model, read-only file
 * mappings, the formats defined here and the Llama architecture check. The
 * interface every reader uses (mpq_model_format.h) is public.
 *
 * A reader maps its files through mpq_io_map_file (the model owns the
 * mappings), appends tensors with mpq_model_add_tensor and fills m->arch.
 * Everything here is local.
 */
#ifndef MPQ_IO_INTERNAL_H
#define MPQ_IO_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "mpq_ctx.h"
#include "mpq_model.h"
#include "mpq_model_format.h"

/* One read-only, private mapping of a whole file, or an anonymous buffer
 * (mpq_model_add_buffer: writable until mpq_model_seal_buffers). */
typedef struct mpq_io_map {
    char *path;                /* as opened (for messages) */
    const unsigned char *base; /* PROT_READ, MAP_PRIVATE */
    size_t size;               /* bytes */
    int anon;                  /* 1: an anonymous buffer, not a file */
} mpq_io_map;

struct mpq_model {
    char *path; /* as given to mpq_model_open */
    mpq_arch arch;
    int64_t nmaps, cap_maps;
    mpq_io_map **maps; /* [cap_maps], the first nmaps used; each allocated alone so that
                          pointers to a mapping stay valid while more are added */
    int64_t ntensors, cap_tensors;
    mpq_tensor *tensors; /* [cap_tensors], the first ntensors used */
    char *arch_src;      /* the file the architecture came from when not the tensors' own
                            (config.json), for messages; NULL: the first mapped file */
    int64_t nforeign, cap_foreign;
    mpq_foreign_tensor *foreign; /* [cap_foreign]: tensors of dtypes the model cannot use */
    /* fp32 copies of converted tensors, shared by every family instance of
     * the model (mpq_model_f32); the pointer makes them mutable through a
     * const model */
    struct mpq_f32_cache *f32;
};

/* Maps `path` read-only into m and returns the mapping (owned by m). An
 * empty, missing or unreadable file is an error naming the path. */
mpq_err mpq_io_map_file(mpq_ctx *ctx, mpq_model *m, const char *path, const mpq_io_map **out);

/* Records `path` (config.json) as the file m's architecture came from, so
 * that a value that disagrees with the tensors blames it, not a shard. */
mpq_err mpq_io_set_arch_source(mpq_ctx *ctx, mpq_model *m, const char *path);

/* Appends a tensor of an unusable dtype (mpq_foreign_tensor) to m; and the
 * one named `name`, NULL when none. */
mpq_err mpq_model_add_foreign(mpq_ctx *ctx, mpq_model *m, const mpq_foreign_tensor *t);
const mpq_foreign_tensor *mpq_io_find_foreign(const mpq_model *m, const char *name);

/* Checks that the Llama-family tensors described by m->arch are all present
 * with the shapes the architecture implies (q/k/v biases when qkv_bias,
 * lm_head unless tied). Errors name the model's file and the tensor. */
mpq_err mpq_io_check_llama(mpq_ctx *ctx, const mpq_model *m);

/* The formats read in this folder (the registry is in io_model.c). */
extern const mpq_model_format mpq_format_llama2c;
extern const mpq_model_format mpq_format_safetensors;
extern const mpq_model_format mpq_format_gguf;

/* GPTQ checkpoints (io_gptq.c), probed before plain safetensors. */
extern const mpq_model_format mpq_format_gptq;

/* io_safetensors.c, for the GPTQ reader: a JSON file as an object with
 * unique keys (owner: caller, cJSON_Delete), and a Hugging Face config.json
 * as the architecture of a Llama-family model. Errors name the file and key. */
struct cJSON;
mpq_err mpq_io_read_json(mpq_ctx *ctx, const char *path, struct cJSON **out);
mpq_err mpq_io_read_hf_config(mpq_ctx *ctx, const char *path, mpq_arch *a);

/* Little-endian loads from unaligned bytes. */
static inline uint32_t mpq_io_le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t mpq_io_le64(const unsigned char *p) {
    return (uint64_t)mpq_io_le32(p) | (uint64_t)mpq_io_le32(p + 4) << 32;
}

#endif
