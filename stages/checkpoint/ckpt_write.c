/* ckpt_write.c: the collective checkpoint writer (layout in mpq_ckpt.h).
 *
 * Parallel HDF5 makes every metadata operation (creating a group, dataset
 * or attribute, writing an attribute) collective with identical arguments,
 * so each write function first brings the owner's metadata to every rank
 * (one broadcast of a plain struct), then all ranks create the objects in
 * the same order, and only the owner moves the data (independent MPI-IO
 * write into a contiguous dataset allocated at creation). */
#include <dirent.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "mpq_coll.h"
#include "ckpt_internal.h"
#include "mpq_ckpt.h"
#include "mpq_h5.h"
#include "mpq_hash.h"
#include "mpq_outfile.h"
#include "mpq_version.h"

_Static_assert(sizeof(hid_t) == sizeof(int64_t), "hid_t is stored in an int64_t");

struct mpq_ckpt_writer {
    mpq_outfile *of;
    hid_t file, layers, tensors;
    int64_t next_index; /* index attribute of the next entry */
    char *inputs_json;  /* rank 0: {path: sha256} */
    uint64_t reserved;  /* bytes of the file whose disk space is reserved */
    int zstd;           /* layers keep the smallest of fixed and zstd-coded codes */
    int64_t last_bits;  /* stored bits of the last layer written (every rank) */
};

/* ---- small HDF5 helpers (all collective when the file is parallel) ------------- */

/* Object creation properties without timestamps, so that the bytes do not
 * depend on when (or on how many ranks) the file was written. */
static mpq_err make_gcpl(mpq_ctx *ctx, hid_t *gcpl) {
    MPQ_H5(*gcpl = H5Pcreate(H5P_GROUP_CREATE));
    if (H5Pset_obj_track_times(*gcpl, 0) < 0) {
        H5Pclose(*gcpl);
        *gcpl = H5I_INVALID_HID;
        MPQ_H5(-1);
    }
    return MPQ_OK;
}

static mpq_err make_dcpl(mpq_ctx *ctx, hid_t *dcpl) {
    MPQ_H5(*dcpl = H5Pcreate(H5P_DATASET_CREATE));
    if (H5Pset_obj_track_times(*dcpl, 0) < 0 || H5Pset_layout(*dcpl, H5D_CONTIGUOUS) < 0 ||
        H5Pset_alloc_time(*dcpl, H5D_ALLOC_TIME_EARLY) < 0 ||
        H5Pset_fill_time(*dcpl, H5D_FILL_TIME_NEVER) < 0) {
        H5Pclose(*dcpl);
        *dcpl = H5I_INVALID_HID;
        MPQ_H5(-1);
    }
    return MPQ_OK;
}

mpq_err mpq_ckpt_h5_strtype(mpq_ctx *ctx, size_t len, int64_t *type) {
    hid_t t = H5I_INVALID_HID;
    MPQ_H5(t = H5Tcopy(H5T_C_S1));
    if (H5Tset_size(t, len > 0 ? len : 1) < 0 || H5Tset_strpad(t, H5T_STR_NULLPAD) < 0) {
        H5Tclose(t);
        MPQ_H5(-1);
    }
    *type = t;
    return MPQ_OK;
}

static mpq_err attr_write(mpq_ctx *ctx, hid_t obj, const char *name, hid_t ftype, hid_t mtype,
                          int ndim, const hsize_t *dims, const void *value, const char *what) {
    mpq_err err = MPQ_OK;
    hid_t sp = H5I_INVALID_HID, a = H5I_INVALID_HID;
    if (ndim == 0)
        MPQ_H5_ID(sp, H5Screate(H5S_SCALAR), what);
    else
        MPQ_H5_ID(sp, H5Screate_simple(ndim, dims, NULL), what);
    MPQ_H5_ID(a, H5Acreate2(obj, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT), what);
    MPQ_H5_TRY(H5Awrite(a, mtype, value), what);
cleanup:
    if (a >= 0)
        H5Aclose(a);
    if (sp >= 0)
        H5Sclose(sp);
    return err;
}

static mpq_err attr_str(mpq_ctx *ctx, hid_t obj, const char *name, const char *value,
                        const char *what) {
    mpq_err err = MPQ_OK;
    int64_t t = H5I_INVALID_HID;
    size_t len = strlen(value);
    MPQ_CALL(mpq_ckpt_h5_strtype(ctx, len, &t));
    /* A one-byte buffer for "": the type is one NUL-padded byte. */
    MPQ_TRY(attr_write(ctx, obj, name, t, t, 0, NULL, len ? value : "", what));
cleanup:
    H5Tclose(t);
    return err;
}

static mpq_err attr_i64(mpq_ctx *ctx, hid_t obj, const char *name, int64_t v, const char *what) {
    return attr_write(ctx, obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, 0, NULL, &v, what);
}

static mpq_err attr_i32(mpq_ctx *ctx, hid_t obj, const char *name, int32_t v, const char *what) {
    return attr_write(ctx, obj, name, H5T_STD_I32LE, H5T_NATIVE_INT32, 0, NULL, &v, what);
}

static mpq_err attr_f64(mpq_ctx *ctx, hid_t obj, const char *name, double v, const char *what) {
    return attr_write(ctx, obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 0, NULL, &v, what);
}

static mpq_err attr_u32(mpq_ctx *ctx, hid_t obj, const char *name, uint32_t v, const char *what) {
    return attr_write(ctx, obj, name, H5T_STD_U32LE, H5T_NATIVE_UINT32, 0, NULL, &v, what);
}

/* Creates dataset `name` under parent (1-D of n elements, or the given
 * shape; ndim 0 = scalar), reserves its disk space (collectively, so a full
 * disk fails every rank alike before anything is written) and, on rank
 * `writer` only, writes data. */
static mpq_err dataset_write(mpq_ctx *ctx, mpq_ckpt_writer *w, hid_t parent, const char *name,
                             hid_t ftype, hid_t mtype, int ndim, const int64_t *shape,
                             const void *data, int writer, const char *what, hid_t *keep) {
    mpq_err err = MPQ_OK;
    hid_t sp = H5I_INVALID_HID, d = H5I_INVALID_HID, dcpl = H5I_INVALID_HID;
    hsize_t dims[MPQ_TENSOR_MAXDIM];
    int64_t numel = 1;
    for (int k = 0; k < ndim; k++) {
        dims[k] = (hsize_t)shape[k];
        numel *= shape[k];
    }
    MPQ_TRY(make_dcpl(ctx, &dcpl));
    if (ndim == 0)
        MPQ_H5_ID(sp, H5Screate(H5S_SCALAR), what);
    else
        MPQ_H5_ID(sp, H5Screate_simple(ndim, dims, NULL), what);
    MPQ_H5_ID(d, H5Dcreate2(parent, name, ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT), what);
    MPQ_TRY(mpq_h5_reserve(ctx, w->file, d, 1, &w->reserved, what));
    if (ctx->rank == writer && numel > 0)
        MPQ_H5_TRY(H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), what);
    if (keep) {
        *keep = d;
        d = H5I_INVALID_HID;
    }
cleanup:
    if (d >= 0)
        H5Dclose(d);
    if (sp >= 0)
        H5Sclose(sp);
    if (dcpl >= 0)
        H5Pclose(dcpl);
    return err;
}

/* A text as a scalar fixed-length string dataset, written by rank 0. */
static mpq_err text_dataset(mpq_ctx *ctx, mpq_ckpt_writer *w, hid_t parent, const char *name,
                            const char *text, int64_t len, const char *what) {
    mpq_err err = MPQ_OK;
    int64_t t = H5I_INVALID_HID;
    char where[4200]; /* messages name the output file, then the object */
    snprintf(where, sizeof where, "%s: %s", w->of->dest, what);
    MPQ_CALL(mpq_ckpt_h5_strtype(ctx, (size_t)len, &t));
    MPQ_TRY(dataset_write(ctx, w, parent, name, t, t, 0, NULL, len ? text : "", 0, where, NULL));
cleanup:
    H5Tclose(t);
    return err;
}

static mpq_err make_group(mpq_ctx *ctx, hid_t parent, const char *name, const char *what,
                          hid_t *out) {
    mpq_err err = MPQ_OK;
    hid_t gcpl = H5I_INVALID_HID;
    MPQ_TRY(make_gcpl(ctx, &gcpl));
    MPQ_H5_ID(*out, H5Gcreate2(parent, name, H5P_DEFAULT, gcpl, H5P_DEFAULT), what);
cleanup:
    if (gcpl >= 0)
        H5Pclose(gcpl);
    return err;
}

/* ---- input hashes ------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static mpq_err hash_into(mpq_ctx *ctx, cJSON *obj, const char *key, const char *path) {
    char hex[MPQ_SHA256_HEX];
    MPQ_CALL(mpq_sha256_file(ctx, path, hex));
    MPQ_CHECK(cJSON_AddStringToObject(obj, key, hex), MPQ_ERR_NOMEM,
              "cannot record the hash of input '%s'", path);
    return MPQ_OK;
}

/* A directory input (a sharded model) is hashed file by file, sorted. */
static mpq_err hash_dir(mpq_ctx *ctx, cJSON *obj, const char *dir) {
    mpq_err err = MPQ_OK;
    DIR *d = opendir(dir);
    char **names = NULL, *path = NULL;
    int64_t n = 0, cap = 0;
    MPQ_CHECK(d, MPQ_ERR_IO, "cannot list input directory '%s'", dir);
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            int64_t nc = cap ? 2 * cap : 16;
            MPQ_TRY(mpq_realloc(ctx, cap, nc, sizeof *names, (void **)&names));
            cap = nc;
        }
        MPQ_TRY(mpq_strdup(ctx, e->d_name, &names[n]));
        n++;
    }
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    size_t plen = strlen(dir) + 2;
    for (int64_t i = 0; i < n; i++) {
        size_t len = plen + strlen(names[i]);
        MPQ_TRY(mpq_malloc(ctx, (int64_t)len, 1, (void **)&path));
        snprintf(path, len, "%s/%s", dir, names[i]);
        struct stat st;
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
            MPQ_TRY(hash_into(ctx, obj, path, path));
        MPQ_FREE(path);
    }
cleanup:
    mpq_free(path);
    for (int64_t i = 0; i < n; i++)
        mpq_free(names[i]);
    mpq_free(names);
    if (d)
        closedir(d);
    return err;
}

mpq_err mpq_ckpt_hash_inputs(mpq_ctx *ctx, const char *const *inputs, int64_t n, char **json) {
    mpq_err err = MPQ_OK;
    cJSON *obj = cJSON_CreateObject();
    char *text = NULL;
    MPQ_CHECK(obj, MPQ_ERR_NOMEM, "cannot allocate the input hash table");
    for (int64_t i = 0; i < n; i++) {
        if (!inputs || !inputs[i] || !inputs[i][0])
            continue;
        struct stat st;
        MPQ_ENSURE(stat(inputs[i], &st) == 0, MPQ_ERR_IO, "cannot hash input '%s': it is missing",
                   inputs[i]);
        /* A path given twice (e.g. the same IDX file for calibration and
         * evaluation) is one input. */
        if (cJSON_GetObjectItemCaseSensitive(obj, inputs[i]))
            continue;
        if (S_ISDIR(st.st_mode))
            MPQ_TRY(hash_dir(ctx, obj, inputs[i]));
        else
            MPQ_TRY(hash_into(ctx, obj, inputs[i], inputs[i]));
    }
    text = cJSON_Print(obj);
    MPQ_ENSURE(text, MPQ_ERR_NOMEM, "cannot format the input hash table");
    MPQ_TRY(mpq_strdup(ctx, text, json));
cleanup:
    cJSON_free(text);
    cJSON_Delete(obj);
    return err;
}

/* ---- create / commit / abort ------------------------------------------------ */

static void close_handles(mpq_ckpt_writer *w) {
    if (w->layers >= 0)
        H5Gclose(w->layers);
    if (w->tensors >= 0)
        H5Gclose(w->tensors);
    w->layers = w->tensors = H5I_INVALID_HID;
}

static mpq_err open_file(mpq_ctx *ctx, mpq_ckpt_writer *w) {
    mpq_err err = MPQ_OK;
    hid_t fapl = H5I_INVALID_HID, fcpl = H5I_INVALID_HID;
    const char *what = w->of->dest;
    MPQ_H5_ID(fapl, H5Pcreate(H5P_FILE_ACCESS), what);
    if (ctx->comm != MPI_COMM_NULL)
        MPQ_H5_TRY(H5Pset_fapl_mpio(fapl, ctx->comm, MPI_INFO_NULL), what);
    /* The unique temporary name already keeps writers apart; file locks
     * fail on some parallel file systems. */
    MPQ_H5_TRY(H5Pset_file_locking(fapl, 0, 1), what);
    MPQ_H5_ID(fcpl, H5Pcreate(H5P_FILE_CREATE), what);
    MPQ_H5_TRY(H5Pset_obj_track_times(fcpl, 0), what);
    MPQ_H5_ID(w->file, H5Fcreate(w->of->tmp, H5F_ACC_TRUNC, fcpl, fapl), what);
    MPQ_TRY(attr_str(ctx, w->file, "format", MPQ_CKPT_FORMAT, what));
    MPQ_TRY(attr_i32(ctx, w->file, "version", MPQ_CKPT_VERSION, what));
    MPQ_TRY(make_group(ctx, w->file, "layers", what, &w->layers));
    MPQ_TRY(make_group(ctx, w->file, "tensors", what, &w->tensors));
cleanup:
    if (fcpl >= 0)
        H5Pclose(fcpl);
    if (fapl >= 0)
        H5Pclose(fapl);
    return err;
}

static void writer_free(mpq_ckpt_writer **pw) {
    mpq_ckpt_writer *w = *pw;
    close_handles(w);
    mpq_h5_discard(w->file);
    mpq_free(w->inputs_json);
    mpq_free(w);
    *pw = NULL;
}

mpq_err mpq_ckpt_writer_create(mpq_ctx *ctx, const char *path, int overwrite,
                               const char *const *inputs, int64_t n_inputs, mpq_ckpt_writer **out) {
    return mpq_ckpt_writer_create_hashed(ctx, path, overwrite, inputs, n_inputs, NULL, out);
}

mpq_err mpq_ckpt_writer_create_hashed(mpq_ctx *ctx, const char *path, int overwrite,
                                      const char *const *inputs, int64_t n_inputs,
                                      const char *hashes, mpq_ckpt_writer **out) {
    mpq_err err = MPQ_OK;
    mpq_ckpt_writer *w = NULL;
    *out = NULL;
    mpq_h5_quiet();
    err = mpq_malloc(ctx, 1, sizeof *w, (void **)&w);
    if (w)
        w->file = w->layers = w->tensors = H5I_INVALID_HID;
    MPQ_CALL(mpq_agree(ctx, err));
    mpq_outfile_opts opts = {overwrite, inputs, n_inputs};
    err = mpq_outfile_open_all(ctx, path, &opts, &w->of);
    if (err != MPQ_OK) {
        mpq_free(w);
        return mpq_err_trace(ctx, err, __FILE__, __LINE__, __func__);
    }
    if (ctx->rank == 0)
        err = hashes ? mpq_strdup(ctx, hashes, &w->inputs_json)
                     : mpq_ckpt_hash_inputs(ctx, inputs, n_inputs, &w->inputs_json);
    MPQ_TRY(mpq_agree(ctx, err));
    err = open_file(ctx, w);
    MPQ_TRY(mpq_agree(ctx, err));
    *out = w;
    return MPQ_OK;
cleanup:
    mpq_ckpt_abort(ctx, &w);
    return err;
}

mpq_err mpq_ckpt_commit(mpq_ctx *ctx, mpq_ckpt_writer **pw) {
    mpq_ckpt_writer *w = *pw;
    MPQ_CHECK(w, MPQ_ERR_ARG, "commit of a checkpoint writer that is not open");
    mpq_err err = MPQ_OK;
    close_handles(w);
    hid_t file = w->file;
    w->file = H5I_INVALID_HID;
    err = mpq_agree(ctx, mpq_h5_close_written(ctx, file, 1, &w->reserved, w->of->dest));
    if (err != MPQ_OK) {
        mpq_ckpt_abort(ctx, pw);
        return mpq_err_trace(ctx, err, __FILE__, __LINE__, __func__);
    }
    err = mpq_outfile_commit_all(ctx, &w->of);
    writer_free(pw);
    MPQ_CALL(err);
    return MPQ_OK;
}

void mpq_ckpt_abort(mpq_ctx *ctx, mpq_ckpt_writer **pw) {
    if (!pw || !*pw)
        return;
    mpq_ckpt_writer *w = *pw;
    close_handles(w);
    mpq_h5_discard(w->file);
    w->file = H5I_INVALID_HID;
    mpq_outfile_abort_all(ctx, &w->of);
    writer_free(pw);
}

mpq_err mpq_ckpt_writer_set_coding(mpq_ctx *ctx, mpq_ckpt_writer *w, const char *coding) {
    MPQ_CHECK(w, MPQ_ERR_ARG, "code coding of a checkpoint writer that is not open");
    MPQ_CHECK(coding && (strcmp(coding, "fixed") == 0 || strcmp(coding, "zstd") == 0), MPQ_ERR_ARG,
              "%s: code coding '%s' is not fixed or zstd", w->of->dest, coding ? coding : "(null)");
    w->zstd = strcmp(coding, "zstd") == 0;
    return MPQ_OK;
}

int64_t mpq_ckpt_writer_last_bits(const mpq_ckpt_writer *w) {
    return w ? w->last_bits : 0;
}

/* ---- arch --------------------------------------------------------------------- */

mpq_err mpq_ckpt_write_arch(mpq_ctx *ctx, mpq_ckpt_writer *w, const mpq_arch *arch) {
    mpq_err err = MPQ_OK;
    hid_t g = H5I_INVALID_HID;
    mpq_arch a;
    if (ctx->rank == 0)
        a = *arch;
    if (ctx->comm != MPI_COMM_NULL && ctx->size > 1)
        MPQ_MPI(MPI_Bcast(&a, (int)sizeof a, MPI_BYTE, 0, ctx->comm));
    /* The strings come from fixed arrays: make sure they are terminated. */
    a.family[sizeof a.family - 1] = a.format[sizeof a.format - 1] = '\0';
    a.model_type[sizeof a.model_type - 1] = '\0';
    const char *what = "/arch";
    MPQ_TRY(make_group(ctx, w->file, "arch", what, &g));
    MPQ_TRY(attr_str(ctx, g, "family", a.family, what));
    MPQ_TRY(attr_str(ctx, g, "format", a.format, what));
    MPQ_TRY(attr_str(ctx, g, "model_type", a.model_type, what));
    const struct {
        const char *name;
        int64_t v;
    } ints[] = {{"dim", a.dim},
                {"hidden_dim", a.hidden_dim},
                {"n_layers", a.n_layers},
                {"n_heads", a.n_heads},
                {"n_kv_heads", a.n_kv_heads},
                {"head_dim", a.head_dim},
                {"vocab_size", a.vocab_size},
                {"seq_len", a.seq_len}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        MPQ_TRY(attr_i64(ctx, g, ints[i].name, ints[i].v, what));
    MPQ_TRY(attr_f64(ctx, g, "norm_eps", a.norm_eps, what));
    MPQ_TRY(attr_f64(ctx, g, "rope_theta", a.rope_theta, what));
    MPQ_TRY(attr_i32(ctx, g, "tied_embeddings", a.tied_embeddings, what));
    MPQ_TRY(attr_i32(ctx, g, "qkv_bias", a.qkv_bias, what));
    MPQ_TRY(attr_i32(ctx, g, "rope_interleaved", a.rope_interleaved, what));
    MPQ_TRY(attr_i32(ctx, g, "o_bias", a.o_bias, what));
    MPQ_TRY(attr_str(ctx, g, "rope_scaling", mpq_rope_scaling_name(a.rope_scaling), what));
    MPQ_TRY(attr_f64(ctx, g, "rope_factor", a.rope_factor, what));
    MPQ_TRY(attr_f64(ctx, g, "rope_low_freq_factor", a.rope_low_freq, what));
    MPQ_TRY(attr_f64(ctx, g, "rope_high_freq_factor", a.rope_high_freq, what));
    MPQ_TRY(attr_i64(ctx, g, "rope_original_max_position", a.rope_orig_max, what));
cleanup:
    if (g >= 0)
        H5Gclose(g);
    return mpq_agree(ctx, err);
}

/* ---- entries ------------------------------------------------------------------ */

/* Metadata of one entry, broadcast from its owner (plain data). */
typedef struct entry_meta {
    int32_t status; /* MPQ_OK, or the owner's error (already agreed) */
    int32_t ndim;
    int32_t code_bits;
    int32_t dtype;
    int32_t coding; /* layers: MPQ_CKPT_CODING_* of the stored codes */
    int32_t coded;  /* layers: 1 when the writer codes (attribute codes_coding written) */
    int64_t shape[MPQ_TENSOR_MAXDIM];
    int64_t rows, cols, group, codes_bytes, params_bytes;
    uint32_t codes_crc, params_crc; /* CRC-32 of the stored bytes (tensors: codes_crc) */
    double loss;
    char name[MPQ_TENSOR_NAME_MAX];
    char spec[MPQ_QSPEC_MAX];
    char quantizer[32];
    char method[32];
    char note[MPQ_CKPT_NOTE_MAX];    /* tensors: the `folded` attribute ("": none) */
    mpq_ckpt_layout lay;             /* layers: the self-description */
    float levels[2 * MPQ_QMAXCODES]; /* layers: [lay.level_rows][lay.ncodes] */
} entry_meta;

static mpq_err check_name(mpq_ctx *ctx, const char *name) {
    size_t n = strlen(name);
    MPQ_CHECK(n > 0 && n < MPQ_TENSOR_NAME_MAX, MPQ_ERR_ARG,
              "checkpoint entry name '%.60s' is empty or longer than %d bytes", name,
              MPQ_TENSOR_NAME_MAX - 1);
    MPQ_CHECK(!strchr(name, '/') && strcmp(name, ".") != 0, MPQ_ERR_ARG,
              "tensor name '%s' cannot be stored in a checkpoint (it contains '/' or is '.')",
              name);
    return MPQ_OK;
}

/* The owner's metadata of layer l; with coding on, *coded (caller:
 * mpq_free; NULL when the fixed codes are kept) receives the stored codes. */
static mpq_err fill_layer_meta(mpq_ctx *ctx, const mpq_ckpt_layer_desc *d, const mpq_qlayer *l,
                               int zstd, entry_meta *m, uint8_t **coded) {
    MPQ_CHECK(d && d->tensor && l, MPQ_ERR_ARG,
              "checkpoint layer: the owner rank passed no description or no layer");
    MPQ_CALL(check_name(ctx, d->tensor));
    snprintf(m->name, sizeof m->name, "%s", d->tensor);
    const char *method = d->method ? d->method : "";
    MPQ_CHECK(strlen(method) < sizeof m->method, MPQ_ERR_ARG,
              "layer '%s': method name '%s' is longer than %zu bytes", d->tensor, method,
              sizeof m->method - 1);
    snprintf(m->method, sizeof m->method, "%s", method);
    MPQ_CHECK(d->ndim >= 0 && d->ndim <= MPQ_TENSOR_MAXDIM, MPQ_ERR_ARG,
              "layer '%s': tensor shape has %d dimensions", d->tensor, d->ndim);
    m->rows = l->rows;
    m->cols = l->cols;
    if (d->ndim == 0) {
        m->ndim = 2;
        m->shape[0] = l->rows;
        m->shape[1] = l->cols;
    } else {
        int64_t numel = 1;
        m->ndim = d->ndim;
        for (int k = 0; k < d->ndim; k++) {
            MPQ_CHECK(d->shape[k] >= 0, MPQ_ERR_ARG, "layer '%s': negative dimension", d->tensor);
            m->shape[k] = d->shape[k];
            MPQ_CALL(mpq_mul64(ctx, numel, d->shape[k], d->tensor, &numel));
        }
        MPQ_CHECK(numel == l->rows * l->cols, MPQ_ERR_ARG,
                  "layer '%s': tensor shape has %lld elements but the layer is [%lld][%lld]",
                  d->tensor, (long long)numel, (long long)l->rows, (long long)l->cols);
    }
    mpq_qspec_format(&l->spec, m->spec, sizeof m->spec);
    snprintf(m->quantizer, sizeof m->quantizer, "%s", l->spec.ops->name);
    m->code_bits = l->spec.bits;
    m->group = l->spec.gran == MPQ_QGRAN_GROUP ? l->spec.group : 0;
    m->codes_bytes = l->packed_bytes;
    m->coding = MPQ_CKPT_CODING_FIXED;
    m->coded = zstd;
    if (zstd) {
        int coding = MPQ_CKPT_CODING_FIXED;
        MPQ_CALL(mpq_ckpt_encode_codes(ctx, l, &coding, coded, &m->codes_bytes));
        m->coding = coding;
    }
    m->params_bytes = l->nparam_bytes;
    m->loss = d->loss;
    m->codes_crc = mpq_ckpt_crc32(*coded ? *coded : l->packed, m->codes_bytes);
    m->params_crc = mpq_ckpt_crc32(l->param_bytes, l->nparam_bytes);
    MPQ_CALL(mpq_ckpt_describe(ctx, &l->spec, l->rows, l->cols, &m->lay));
    mpq_ckpt_levels(l->params, &m->lay, m->levels);
    return MPQ_OK;
}

/* The layout attributes of a layer (README.md, "Reading a checkpoint
 * without mpquant"): how to unpack the codes and the params blob and the
 * formula and level table that turn them into weights. Collective. */
static mpq_err write_layout(mpq_ctx *ctx, hid_t g, const entry_meta *m, const char *what) {
    const mpq_ckpt_layout *y = &m->lay;
    MPQ_CALL(attr_str(ctx, g, "packing", y->packing, what));
    MPQ_CALL(attr_str(ctx, g, "scale_format", y->scale_format, what));
    MPQ_CALL(attr_i64(ctx, g, "group_cols", y->group_cols, what));
    MPQ_CALL(attr_i64(ctx, g, "groups_per_row", y->groups_per_row, what));
    MPQ_CALL(attr_i64(ctx, g, "n_groups", y->n_groups, what));
    MPQ_CALL(attr_str(ctx, g, "params_layout", y->params_layout, what));
    MPQ_CALL(attr_str(ctx, g, "dequant", y->dequant, what));
    hsize_t dims[2] = {(hsize_t)y->level_rows, (hsize_t)y->ncodes};
    if (y->level_rows == 1)
        MPQ_CALL(attr_write(ctx, g, "levels", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, dims + 1,
                            m->levels, what));
    else
        MPQ_CALL(attr_write(ctx, g, "levels", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, dims, m->levels,
                            what));
    return MPQ_OK;
}

/* Brings the owner's metadata (or its error) to every rank. */
static mpq_err share_meta(mpq_ctx *ctx, int owner, mpq_err local, entry_meta *m) {
    MPQ_CHECK(owner >= 0 && owner < ctx->size, MPQ_ERR_ARG,
              "checkpoint entry owner %d is not a rank of %d", owner, ctx->size);
    MPQ_CALL(mpq_agree(ctx, local));
    if (ctx->comm != MPI_COMM_NULL && ctx->size > 1)
        MPQ_MPI(MPI_Bcast(m, (int)sizeof *m, MPI_BYTE, owner, ctx->comm));
    m->name[sizeof m->name - 1] = m->spec[sizeof m->spec - 1] = '\0';
    m->quantizer[sizeof m->quantizer - 1] = m->method[sizeof m->method - 1] = '\0';
    m->note[sizeof m->note - 1] = '\0';
    return MPQ_OK;
}

/* Two entries under one name would make the file ambiguous. */
static mpq_err check_unique(mpq_ctx *ctx, mpq_ckpt_writer *w, const char *name) {
    htri_t a = H5Lexists(w->layers, name, H5P_DEFAULT);
    htri_t b = H5Lexists(w->tensors, name, H5P_DEFAULT);
    MPQ_CHECK(a == 0 && b == 0, MPQ_ERR_ARG, "%s: entry '%s' is written twice", w->of->dest, name);
    return MPQ_OK;
}

mpq_err mpq_ckpt_write_layer(mpq_ctx *ctx, mpq_ckpt_writer *w, const mpq_ckpt_layer_desc *desc,
                             const mpq_qlayer *l, int owner) {
    mpq_err err = MPQ_OK;
    hid_t g = H5I_INVALID_HID;
    entry_meta m;
    memset(&m, 0, sizeof m);
    uint8_t *coded = NULL; /* owner: the zstd-coded codes (NULL: fixed) */
    char what[MPQ_TENSOR_NAME_MAX + 32];
    mpq_err local =
        ctx->rank == owner ? fill_layer_meta(ctx, desc, l, w->zstd, &m, &coded) : MPQ_OK;
    err = share_meta(ctx, owner, local, &m);
    if (err != MPQ_OK) {
        mpq_free(coded);
        return mpq_err_trace(ctx, err, __FILE__, __LINE__, __func__);
    }
    MPQ_TRY(check_unique(ctx, w, m.name));
    snprintf(what, sizeof what, "%s: /layers/%s", w->of->dest, m.name);
    MPQ_TRY(make_group(ctx, w->layers, m.name, what, &g));
    MPQ_TRY(attr_i64(ctx, g, "index", w->next_index, what));
    MPQ_TRY(attr_str(ctx, g, "spec", m.spec, what));
    MPQ_TRY(attr_str(ctx, g, "quantizer", m.quantizer, what));
    MPQ_TRY(attr_i32(ctx, g, "code_bits", m.code_bits, what));
    MPQ_TRY(attr_i64(ctx, g, "group", m.group, what));
    MPQ_TRY(attr_i64(ctx, g, "rows", m.rows, what));
    MPQ_TRY(attr_i64(ctx, g, "cols", m.cols, what));
    hsize_t nd = (hsize_t)m.ndim;
    MPQ_TRY(attr_write(ctx, g, "shape", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, &nd, m.shape, what));
    MPQ_TRY(attr_i64(ctx, g, "bits", 8 * (m.codes_bytes + m.params_bytes), what));
    MPQ_TRY(attr_str(ctx, g, "method", m.method, what));
    MPQ_TRY(attr_f64(ctx, g, "loss", m.loss, what));
    MPQ_TRY(write_layout(ctx, g, &m, what));
    MPQ_TRY(attr_u32(ctx, g, "codes_crc32", m.codes_crc, what));
    MPQ_TRY(attr_u32(ctx, g, "params_crc32", m.params_crc, what));
    if (m.coded)
        MPQ_TRY(attr_str(ctx, g, "codes_coding", mpq_ckpt_coding_name(m.coding), what));
    const int own = ctx->rank == owner;
    MPQ_TRY(dataset_write(ctx, w, g, "codes", H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, &m.codes_bytes,
                          own ? (coded ? coded : l->packed) : NULL, owner, what, NULL));
    MPQ_TRY(dataset_write(ctx, w, g, "params", H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, &m.params_bytes,
                          own ? l->param_bytes : NULL, owner, what, NULL));
    w->next_index++;
    w->last_bits = 8 * (m.codes_bytes + m.params_bytes);
cleanup:
    mpq_free(coded);
    if (g >= 0)
        H5Gclose(g);
    return mpq_agree(ctx, err);
}

static mpq_err fill_tensor_meta(mpq_ctx *ctx, const mpq_tensor *t, const char *note,
                                entry_meta *m) {
    MPQ_CHECK(t, MPQ_ERR_ARG, "checkpoint tensor: the owner rank passed no tensor");
    MPQ_CALL(check_name(ctx, t->name));
    MPQ_CHECK((int)t->dtype >= 0 && t->dtype < MPQ_DTYPE_COUNT, MPQ_ERR_ARG,
              "tensor '%s' has an invalid dtype", t->name);
    MPQ_CHECK(t->ndim >= 0 && t->ndim <= MPQ_TENSOR_MAXDIM, MPQ_ERR_ARG,
              "tensor '%s' has %d dimensions", t->name, t->ndim);
    MPQ_CHECK(t->numel == 0 || t->data, MPQ_ERR_ARG, "tensor '%s' has no data", t->name);
    snprintf(m->name, sizeof m->name, "%s", t->name);
    snprintf(m->note, sizeof m->note, "%s", note ? note : "");
    m->dtype = (int32_t)t->dtype;
    m->ndim = t->ndim;
    for (int k = 0; k < t->ndim; k++)
        m->shape[k] = t->shape[k];
    m->codes_crc = mpq_ckpt_crc32(t->data, t->numel * (int64_t)mpq_dtype_size(t->dtype));
    return MPQ_OK;
}

mpq_err mpq_ckpt_write_tensor(mpq_ctx *ctx, mpq_ckpt_writer *w, const mpq_tensor *t, int owner) {
    return mpq_ckpt_write_tensor_noted(ctx, w, t, owner, NULL);
}

mpq_err mpq_ckpt_write_tensor_noted(mpq_ctx *ctx, mpq_ckpt_writer *w, const mpq_tensor *t,
                                    int owner, const char *note) {
    mpq_err err = MPQ_OK;
    hid_t d = H5I_INVALID_HID;
    entry_meta m;
    memset(&m, 0, sizeof m);
    char what[MPQ_TENSOR_NAME_MAX + 32];
    mpq_err local = ctx->rank == owner ? fill_tensor_meta(ctx, t, note, &m) : MPQ_OK;
    MPQ_CALL(share_meta(ctx, owner, local, &m));
    MPQ_TRY(check_unique(ctx, w, m.name));
    snprintf(what, sizeof what, "%s: /tensors/%s", w->of->dest, m.name);
    /* Stored bit-exactly: fp32 as IEEE float, half types as raw uint16. */
    hid_t ty = m.dtype == MPQ_DTYPE_F32 ? H5T_IEEE_F32LE : H5T_STD_U16LE;
    MPQ_TRY(dataset_write(ctx, w, w->tensors, m.name, ty, ty, m.ndim, m.shape,
                          ctx->rank == owner ? t->data : NULL, owner, what, &d));
    MPQ_TRY(attr_str(ctx, d, "dtype", mpq_dtype_name((mpq_dtype)m.dtype), what));
    MPQ_TRY(attr_i64(ctx, d, "index", w->next_index, what));
    if (m.note[0])
        MPQ_TRY(attr_str(ctx, d, "folded", m.note, what));
    MPQ_TRY(attr_u32(ctx, d, "crc32", m.codes_crc, what));
    w->next_index++;
cleanup:
    if (d >= 0)
        H5Dclose(d);
    return mpq_agree(ctx, err);
}

mpq_err mpq_ckpt_write_model(mpq_ctx *ctx, mpq_ckpt_writer *w, const mpq_model *m, int64_t n,
                             const mpq_ckpt_layer_desc *descs, const mpq_qlayer *const *qlayers,
                             const int *owners) {
    int64_t nt = mpq_model_ntensors(m), matched = 0;
    for (int64_t i = 0; i < nt; i++) {
        const mpq_tensor *t = mpq_model_tensor_at(m, i);
        int64_t j = 0;
        while (j < n && strcmp(descs[j].tensor, t->name) != 0)
            j++;
        if (j < n) {
            matched++;
            MPQ_CALL(mpq_ckpt_write_layer(ctx, w, &descs[j],
                                          ctx->rank == owners[j] ? qlayers[j] : NULL, owners[j]));
        } else {
            MPQ_CALL(mpq_ckpt_write_tensor(ctx, w, t, (int)(i % ctx->size)));
        }
    }
    if (matched != n) {
        for (int64_t j = 0; j < n; j++)
            MPQ_CHECK(mpq_model_find(m, descs[j].tensor), MPQ_ERR_ARG,
                      "%s: quantized layer '%s' is not a tensor of model %s", w->of->dest,
                      descs[j].tensor, mpq_model_path(m));
        return MPQ_ERROR(MPQ_ERR_ARG, "%s: a quantized layer is listed twice", w->of->dest);
    }
    return MPQ_OK;
}

/* ---- provenance ---------------------------------------------------------------- */

/* Rank 0's text (or def) on every rank; *buf owned by the caller. */
static mpq_err share_text(mpq_ctx *ctx, const char *text, const char *def, char **buf,
                          int64_t *len) {
    *buf = NULL;
    *len = 0;
    mpq_err err = MPQ_OK;
    if (ctx->rank == 0) {
        err = mpq_strdup(ctx, text ? text : def, buf);
        if (err == MPQ_OK)
            *len = (int64_t)strlen(*buf);
    }
    MPQ_CALL(mpq_agree(ctx, err));
    err = mpq_bcast_bytes(ctx, 0, buf, len);
    if (err != MPQ_OK)
        MPQ_FREE(*buf);
    return err;
}

mpq_err mpq_ckpt_write_provenance(mpq_ctx *ctx, mpq_ckpt_writer *w, const mpq_ckpt_provenance *p) {
    mpq_err err = MPQ_OK;
    hid_t g = H5I_INVALID_HID;
    enum { T_CONFIG, T_FILE, T_OVER, T_INPUTS, T_EVAL, T_ASSIGN, T_DATE, T_TIMES, NT };
    char *text[NT] = {0};
    int64_t len[NT] = {0};
    static const mpq_ckpt_provenance none = {0};
    if (!p)
        p = &none;
    char now[48] = "";
    if (ctx->rank == 0 && !p->date) {
        time_t t = time(NULL);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(now, sizeof now, "%Y-%m-%dT%H:%M:%SZ", &tm);
    }
    const char *src[NT] = {
        p->config,     p->config_file,          p->overrides,  w->inputs_json, p->eval,
        p->assignment, p->date ? p->date : now, p->stage_times};
    const char *def[NT] = {"", "", "[]", "{}", "{}", "[]", "", "{}"};
    for (int i = 0; i < NT; i++)
        MPQ_TRY(share_text(ctx, src[i], def[i], &text[i], &len[i]));
    const char *what = "/provenance";
    MPQ_TRY(make_group(ctx, w->file, "provenance", what, &g));
    MPQ_TRY(attr_str(ctx, g, "program_version", MPQ_VERSION, what));
    MPQ_TRY(attr_str(ctx, g, "commit", MPQ_GIT_COMMIT, what));
    MPQ_TRY(text_dataset(ctx, w, g, "config", text[T_CONFIG], len[T_CONFIG], "/provenance/config"));
    MPQ_TRY(text_dataset(ctx, w, g, "config_file", text[T_FILE], len[T_FILE],
                         "/provenance/config_file"));
    MPQ_TRY(
        text_dataset(ctx, w, g, "overrides", text[T_OVER], len[T_OVER], "/provenance/overrides"));
    MPQ_TRY(text_dataset(ctx, w, g, "inputs", text[T_INPUTS], len[T_INPUTS], "/provenance/inputs"));
    MPQ_TRY(text_dataset(ctx, w, g, "eval", text[T_EVAL], len[T_EVAL], "/provenance/eval"));
    MPQ_TRY(text_dataset(ctx, w, g, "assignment", text[T_ASSIGN], len[T_ASSIGN],
                         "/provenance/assignment"));
    /* The fields that differ between runs come last (see mpq_ckpt.h). */
    MPQ_TRY(attr_str(ctx, g, "date", text[T_DATE], what));
    MPQ_TRY(attr_i64(ctx, g, "nranks", ctx->size, what));
    MPQ_TRY(text_dataset(ctx, w, g, "stage_times", text[T_TIMES], len[T_TIMES],
                         "/provenance/stage_times"));
cleanup:
    if (g >= 0)
        H5Gclose(g);
    for (int i = 0; i < NT; i++)
        mpq_free(text[i]);
    return mpq_agree(ctx, err);
}
