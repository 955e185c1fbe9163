/* safetensors.c - validated mmap reader and streaming writer for .safetensors files.
 *
 * Reading: the file is mapped read-only; the u64 LE header length N and the N-byte JSON
 * header (parsed with jansson, duplicate keys refused) are checked exactly as the
 * official reader checks them, then every tensor entry is validated (dtype, shape,
 * data_offsets against prod(shape) * bits / 8) and the entries, sorted by offset, must
 * tile the data buffer with no hole, overlap or trailing byte. Names and metadata are
 * copied into memory owned by the st_file; tensor data points into the mapping.
 * A second array, sorted by name, serves st_file_find() by binary search.
 *
 * Writing: specs are validated, laid out by descending element size then by name, the
 * compact JSON header is padded with spaces so the data starts at a multiple of 8, and
 * the file is streamed to "<path>.tmp" (one reusable buffer the size of the largest
 * tensor), fsynced, renamed over path, and the directory fsynced.
 *
 * Streaming writer (st_writer_*): the same layout and header, but the caller appends
 * the data in pieces (its own buffers, or ranges of other files copied kernel-side with
 * copy_file_range), so memory does not grow with tensor size.
 *
 * One file, one concern: the .safetensors format. The reader and both writers share its
 * rules (dtype sizes, shape arithmetic, header layout and padding, the tiling of the
 * data buffer), so a file written here is one the reader here accepts; splitting reader
 * and writer would put those rules in two places.
 */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsutil.h"
#include "reap_err.h"

struct st_file {
    char *path;
    uint64_t size;               /* bytes on disk */
    const unsigned char *map;    /* whole file, read-only; NULL when never mapped */
    uint64_t header_len;         /* N */
    size_t n_tensors;
    st_tensor *tensors;          /* [n_tensors], ascending data offset */
    const st_tensor **by_name;   /* [n_tensors], ascending strcmp(name) */
    size_t n_meta;
    char **meta_keys;            /* [n_meta] */
    char **meta_vals;            /* [n_meta] */
};

/* ---- dtypes ------------------------------------------------------------------------ */

static const struct {
    const char *name;
    unsigned bits;
} dtype_table[ST_DTYPE_COUNT] = {
    [ST_BOOL] = {"BOOL", 8},       [ST_U8] = {"U8", 8},     [ST_I8] = {"I8", 8},
    [ST_F8_E5M2] = {"F8_E5M2", 8}, [ST_F8_E4M3] = {"F8_E4M3", 8},
    [ST_I16] = {"I16", 16},        [ST_U16] = {"U16", 16},  [ST_F16] = {"F16", 16},
    [ST_BF16] = {"BF16", 16},      [ST_I32] = {"I32", 32},  [ST_U32] = {"U32", 32},
    [ST_F32] = {"F32", 32},        [ST_I64] = {"I64", 64},  [ST_U64] = {"U64", 64},
    [ST_F64] = {"F64", 64},
};

int st_dtype_from_name(const char *s, st_dtype *out)
{
    for (int d = 0; d < ST_DTYPE_COUNT; d++) {
        if (s && strcmp(s, dtype_table[d].name) == 0) {
            *out = (st_dtype)d;
            return REAP_OK;
        }
    }
    return reap_err_set(REAP_E_FORMAT, "unknown dtype '%s'", s ? s : "(null)");
}

const char *st_dtype_name(st_dtype d)
{
    if ((int)d < 0 || d >= ST_DTYPE_COUNT)
        return "?";
    return dtype_table[d].name;
}

unsigned st_dtype_bits(st_dtype d)
{
    if ((int)d < 0 || d >= ST_DTYPE_COUNT)
        return 0;
    return dtype_table[d].bits;
}

/* ---- small helpers ------------------------------------------------------------------ */

const char *st_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t len = 0;
    int n = snprintf(buf, cap, "[");
    len = n > 0 ? (size_t)n : 0;
    for (int i = 0; i < ndim && len < cap; i++) {
        n = snprintf(buf + len, cap - len, "%s%lld", i ? ", " : "", (long long)shape[i]);
        if (n < 0)
            break;
        len += (size_t)n;
    }
    if (len < cap)
        snprintf(buf + len, cap - len, "]");
    return buf;
}

/* prod(shape) and prod(shape) * bytes per element; false on overflow. */
static bool shape_bytes(int ndim, const int64_t *shape, unsigned bits, int64_t *numel,
                        uint64_t *nbytes)
{
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || __builtin_mul_overflow(n, (uint64_t)shape[i], &n))
            return false;
    }
    if (n > (uint64_t)INT64_MAX)
        return false;
    uint64_t b;
    if (__builtin_mul_overflow(n, (uint64_t)(bits / 8), &b))
        return false;
    *numel = (int64_t)n;
    *nbytes = b;
    return true;
}

static uint64_t read_u64_le(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static int cmp_by_offset(const void *a, const void *b)
{
    const st_tensor *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_by_name(const void *a, const void *b)
{
    const st_tensor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

/* A JSON integer that fits in [0, INT64_MAX]. */
static bool json_get_nonneg(const json_t *v, int64_t *out)
{
    if (!json_is_integer(v))
        return false;
    json_int_t i = json_integer_value(v);
    if (i < 0)
        return false;
    *out = (int64_t)i;
    return true;
}

/* ---- reading ----------------------------------------------------------------------- */

/* Validate one header entry `name` -> `v` into *t (name already set). */
static int parse_tensor(const char *path, const char *name, const json_t *v, st_tensor *t)
{
    char sbuf[256];
    if (!json_is_object(v))
        return reap_err_set(REAP_E_FORMAT, "%s: tensor '%s': entry is not a JSON object",
                            path, name);

    const json_t *jd = json_object_get(v, "dtype");
    if (!json_is_string(jd))
        return reap_err_set(REAP_E_FORMAT, "%s: tensor '%s': dtype missing or not a string",
                            path, name);
    if (st_dtype_from_name(json_string_value(jd), &t->dtype) != REAP_OK)
        return reap_err_set(REAP_E_FORMAT, "%s: tensor '%s': unknown dtype '%s'", path, name,
                            json_string_value(jd));

    const json_t *js = json_object_get(v, "shape");
    if (!json_is_array(js))
        return reap_err_set(REAP_E_FORMAT, "%s: tensor '%s': shape missing or not an array",
                            path, name);
    size_t nd = json_array_size(js);
    if (nd > ST_MAX_DIMS)
        return reap_err_set(REAP_E_FORMAT, "%s: tensor '%s': shape has %zu dims (max %d)",
                            path, name, nd, ST_MAX_DIMS);
    t->ndim = (int)nd;
    for (size_t i = 0; i < nd; i++) {
        const json_t *jv = json_array_get(js, i);
        if (json_is_integer(jv) && json_integer_value(jv) < 0)
            return reap_err_set(REAP_E_FORMAT, "%s: tensor '%s': shape[%zu] is negative (%lld)",
                                path, name, i, (long long)json_integer_value(jv));
        if (!json_get_nonneg(jv, &t->shape[i]))
            return reap_err_set(REAP_E_FORMAT,
                                "%s: tensor '%s': shape[%zu] is not a non-negative integer",
                                path, name, i);
    }

    const json_t *jo = json_object_get(v, "data_offsets");
    int64_t b, e;
    if (!json_is_array(jo) || json_array_size(jo) != 2)
        return reap_err_set(REAP_E_FORMAT,
                            "%s: tensor '%s': data_offsets missing or not a [begin, end] pair",
                            path, name);
    if (!json_get_nonneg(json_array_get(jo, 0), &b) ||
        !json_get_nonneg(json_array_get(jo, 1), &e))
        return reap_err_set(REAP_E_FORMAT,
                            "%s: tensor '%s': data_offsets are not non-negative integers",
                            path, name);
    if (b > e)
        return reap_err_set(REAP_E_FORMAT,
                            "%s: tensor '%s': data_offsets [%lld, %lld] have begin > end", path,
                            name, (long long)b, (long long)e);
    t->begin = (uint64_t)b;
    t->end = (uint64_t)e;
    t->nbytes = t->end - t->begin;

    uint64_t need;
    if (!shape_bytes(t->ndim, t->shape, st_dtype_bits(t->dtype), &t->numel, &need))
        return reap_err_set(REAP_E_FORMAT, "%s: tensor '%s': shape %s of %s overflows", path,
                            name, st_shape_str(sbuf, sizeof sbuf, t->ndim, t->shape),
                            st_dtype_name(t->dtype));
    if (need != t->nbytes)
        return reap_err_set(REAP_E_FORMAT,
                            "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but "
                            "shape %s of %s needs %llu",
                            path, name, (unsigned long long)t->begin,
                            (unsigned long long)t->end, (unsigned long long)t->nbytes,
                            st_shape_str(sbuf, sizeof sbuf, t->ndim, t->shape),
                            st_dtype_name(t->dtype), (unsigned long long)need);
    return REAP_OK;
}

static int parse_metadata(st_file *f, const json_t *m)
{
    if (!json_is_object(m))
        return reap_err_set(REAP_E_FORMAT, "%s: __metadata__ is not a JSON object", f->path);
    size_t n = json_object_size(m);
    if (n == 0)
        return REAP_OK;
    f->meta_keys = calloc(n, sizeof *f->meta_keys);
    f->meta_vals = calloc(n, sizeof *f->meta_vals);
    if (!f->meta_keys || !f->meta_vals)
        return reap_err_set(REAP_E_NOMEM, "%s: out of memory reading __metadata__", f->path);
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)m, k, v) {
        if (!json_is_string(v))
            return reap_err_set(REAP_E_FORMAT, "%s: __metadata__ '%s' is not a string",
                                f->path, k);
        size_t i = f->n_meta;
        f->meta_keys[i] = strdup(k);
        f->meta_vals[i] = strdup(json_string_value(v));
        f->n_meta++; /* counted now so close frees a partial pair */
        if (!f->meta_keys[i] || !f->meta_vals[i])
            return reap_err_set(REAP_E_NOMEM, "%s: out of memory reading __metadata__",
                                f->path);
    }
    return REAP_OK;
}

/* Parse and validate the header JSON; fills f->tensors (sorted by offset) and metadata. */
static int parse_header(st_file *f)
{
    int rc;
    json_error_t jerr;
    const char *path = f->path;
    json_t *root = json_loadb((const char *)f->map + 8, (size_t)f->header_len,
                              JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: header JSON: %s (line %d, column %d)", path,
                          jerr.text, jerr.line, jerr.column);
        goto fail;
    }
    if (!json_is_object(root)) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: header is not a JSON object", path);
        goto fail;
    }

    size_t cap = json_object_size(root);
    if (cap) {
        f->tensors = calloc(cap, sizeof *f->tensors);
        if (!f->tensors) {
            rc = reap_err_set(REAP_E_NOMEM, "%s: out of memory for %zu tensors", path, cap);
            goto fail;
        }
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            rc = parse_metadata(f, val);
            if (rc)
                goto fail;
            continue;
        }
        st_tensor *t = &f->tensors[f->n_tensors];
        t->name = strdup(key);
        if (!t->name) {
            rc = reap_err_set(REAP_E_NOMEM, "%s: out of memory", path);
            goto fail;
        }
        f->n_tensors++; /* counted now so close frees the name */
        rc = parse_tensor(path, key, val, t);
        if (rc)
            goto fail;
    }

    /* The entries sorted by offset must tile [0, data_len) exactly. */
    uint64_t data_len = f->size - 8 - f->header_len;
    if (f->n_tensors)
        qsort(f->tensors, f->n_tensors, sizeof *f->tensors, cmp_by_offset);
    uint64_t pos = 0;
    for (size_t i = 0; i < f->n_tensors; i++) {
        st_tensor *t = &f->tensors[i];
        if (t->begin > pos) {
            rc = reap_err_set(REAP_E_FORMAT,
                              "%s: tensor '%s': data_offsets [%llu, %llu] leave a gap: the "
                              "previous tensor ends at %llu",
                              path, t->name, (unsigned long long)t->begin,
                              (unsigned long long)t->end, (unsigned long long)pos);
            goto fail;
        }
        if (t->begin < pos) {
            rc = reap_err_set(REAP_E_FORMAT,
                              "%s: tensor '%s': data_offsets [%llu, %llu] overlap '%s' "
                              "which ends at %llu",
                              path, t->name, (unsigned long long)t->begin,
                              (unsigned long long)t->end, f->tensors[i - 1].name,
                              (unsigned long long)pos);
            goto fail;
        }
        if (t->end > data_len) {
            rc = reap_err_set(REAP_E_FORMAT,
                              "%s: tensor '%s': data_offsets [%llu, %llu] run past the end "
                              "of the %llu-byte data buffer",
                              path, t->name, (unsigned long long)t->begin,
                              (unsigned long long)t->end, (unsigned long long)data_len);
            goto fail;
        }
        t->data = f->map + 8 + f->header_len + t->begin;
        pos = t->end;
    }
    if (pos != data_len) {
        if (f->n_tensors)
            rc = reap_err_set(REAP_E_FORMAT,
                              "%s: %llu trailing bytes after the last tensor '%s' (data "
                              "buffer is %llu bytes, tensors end at %llu)",
                              path, (unsigned long long)(data_len - pos),
                              f->tensors[f->n_tensors - 1].name, (unsigned long long)data_len,
                              (unsigned long long)pos);
        else
            rc = reap_err_set(REAP_E_FORMAT,
                              "%s: %llu trailing bytes after the header of a file with no "
                              "tensors",
                              path, (unsigned long long)data_len);
        goto fail;
    }
    rc = REAP_OK;

fail:
    json_decref(root);
    return rc;
}

int st_file_open(const char *path, st_file **out)
{
    return st_file_open_confined(path, NULL, out);
}

int st_file_open_confined(const char *path, const reap_roots *roots, st_file **out)
{
    int rc;
    int fd = -1;
    st_file *f = NULL;
    *out = NULL;

    f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    if ((rc = reap_open_read(path, roots, REAP_OPEN_REGULAR, &fd)))
        goto fail;
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        rc = reap_err_set(REAP_E_IO, "%s: fstat: %s", path, strerror(errno));
        goto fail;
    }
    f->size = (uint64_t)sb.st_size;
    if (f->size < 8) {
        rc = reap_err_set(REAP_E_FORMAT,
                          "%s: file is %llu bytes, too short for the 8-byte header length",
                          path, (unsigned long long)f->size);
        goto fail;
    }
    if (f->size > SIZE_MAX) {
        rc = reap_err_set(REAP_E_IO, "%s: file too large to map", path);
        goto fail;
    }
    void *m = mmap(NULL, (size_t)f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
        rc = reap_err_set(REAP_E_IO, "%s: mmap: %s", path, strerror(errno));
        goto fail;
    }
    f->map = m;
    close(fd);
    fd = -1;

    f->header_len = read_u64_le(f->map);
    if (f->header_len > ST_MAX_HEADER) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: header length %llu exceeds the limit of %llu",
                          path, (unsigned long long)f->header_len, ST_MAX_HEADER);
        goto fail;
    }
    if (f->header_len > f->size - 8) {
        rc = reap_err_set(REAP_E_FORMAT,
                          "%s: header length %llu runs past the end of the %llu-byte file",
                          path, (unsigned long long)f->header_len,
                          (unsigned long long)f->size);
        goto fail;
    }
    rc = parse_header(f);
    if (rc)
        goto fail;

    if (f->n_tensors) {
        f->by_name = malloc(f->n_tensors * sizeof *f->by_name);
        if (!f->by_name) {
            rc = reap_err_set(REAP_E_NOMEM, "%s: out of memory", path);
            goto fail;
        }
        for (size_t i = 0; i < f->n_tensors; i++)
            f->by_name[i] = &f->tensors[i];
        qsort(f->by_name, f->n_tensors, sizeof *f->by_name, cmp_by_name);
    }
    *out = f;
    return REAP_OK;

fail:
    if (fd >= 0)
        close(fd);
    st_file_close(f);
    return rc;
}

void st_file_close(st_file *f)
{
    if (!f)
        return;
    if (f->map)
        munmap((void *)f->map, (size_t)f->size);
    for (size_t i = 0; i < f->n_tensors; i++)
        free((char *)f->tensors[i].name);
    free(f->tensors);
    free(f->by_name);
    for (size_t i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->meta_keys);
    free(f->meta_vals);
    free(f->path);
    free(f);
}

const char *st_file_path(const st_file *f) { return f->path; }
uint64_t st_file_size(const st_file *f) { return f->size; }
size_t st_file_n_tensors(const st_file *f) { return f->n_tensors; }

const st_tensor *st_file_tensor(const st_file *f, size_t i)
{
    return i < f->n_tensors ? &f->tensors[i] : NULL;
}

const st_tensor *st_file_find(const st_file *f, const char *name)
{
    size_t lo = 0, hi = f->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->by_name[mid]->name, name);
        if (c == 0)
            return f->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const char *st_file_metadata(const st_file *f, const char *key)
{
    for (size_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0)
            return f->meta_vals[i];
    return NULL;
}

/* ---- writing ----------------------------------------------------------------------- */

struct layout_entry {
    size_t index;       /* into specs */
    uint64_t begin, nbytes;
};

/* qsort has no context argument: the specs being sorted (thread-local, so concurrent
 * writers do not interfere). */
static _Thread_local const st_write_spec *sort_specs;

static int cmp_layout(const void *a, const void *b)
{
    const struct layout_entry *x = a, *y = b;
    unsigned bx = st_dtype_bits(sort_specs[x->index].dtype);
    unsigned by = st_dtype_bits(sort_specs[y->index].dtype);
    if (bx != by)
        return bx > by ? -1 : 1;
    return strcmp(sort_specs[x->index].name, sort_specs[y->index].name);
}

/* Validate the specs and compute the layout (sorted, with offsets). */
static int plan_layout(const char *path, const st_write_spec *specs, size_t n,
                       struct layout_entry *lay, uint64_t *largest)
{
    char sbuf[256];
    *largest = 0;
    for (size_t i = 0; i < n; i++) {
        const st_write_spec *s = &specs[i];
        if (!s->name)
            return reap_err_set(REAP_E_INVALID, "%s: spec %zu has no name", path, i);
        if (strcmp(s->name, "__metadata__") == 0)
            return reap_err_set(REAP_E_INVALID, "%s: '__metadata__' is not a tensor name",
                                path);
        if ((int)s->dtype < 0 || s->dtype >= ST_DTYPE_COUNT)
            return reap_err_set(REAP_E_INVALID, "%s: tensor '%s': bad dtype %d", path,
                                s->name, (int)s->dtype);
        if (s->ndim < 0 || s->ndim > ST_MAX_DIMS)
            return reap_err_set(REAP_E_INVALID, "%s: tensor '%s': ndim %d out of range 0..%d",
                                path, s->name, s->ndim, ST_MAX_DIMS);
        for (int d = 0; d < s->ndim; d++)
            if (s->shape[d] < 0)
                return reap_err_set(REAP_E_INVALID,
                                    "%s: tensor '%s': negative dimension in shape %s", path,
                                    s->name, st_shape_str(sbuf, sizeof sbuf, s->ndim, s->shape));
        int64_t numel;
        uint64_t nb;
        if (!shape_bytes(s->ndim, s->shape, st_dtype_bits(s->dtype), &numel, &nb) ||
            nb > SIZE_MAX)
            return reap_err_set(REAP_E_INVALID, "%s: tensor '%s': shape %s overflows", path,
                                s->name, st_shape_str(sbuf, sizeof sbuf, s->ndim, s->shape));
        lay[i].index = i;
        lay[i].nbytes = nb;
        if (nb > *largest)
            *largest = nb;
    }
    sort_specs = specs;
    if (n)
        qsort(lay, n, sizeof *lay, cmp_layout);
    sort_specs = NULL;
    uint64_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        lay[i].begin = pos;
        if (__builtin_add_overflow(pos, lay[i].nbytes, &pos))
            return reap_err_set(REAP_E_INVALID, "%s: total size overflows", path);
    }
    return REAP_OK;
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int check_duplicates(const char *path, const st_write_spec *specs, size_t n)
{
    int rc = REAP_OK;
    const char **names = NULL;
    if (n < 2)
        return REAP_OK;
    names = malloc(n * sizeof *names);
    if (!names) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    for (size_t i = 0; i < n; i++)
        names[i] = specs[i].name;
    qsort(names, n, sizeof *names, cmp_str_ptr);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(names[i - 1], names[i]) == 0) {
            rc = reap_err_set(REAP_E_INVALID, "%s: duplicate tensor name '%s'", path,
                              names[i]);
            goto fail;
        }
    }
fail:
    free(names);
    return rc;
}

static int build_header(const char *path, const st_write_spec *specs,
                        const struct layout_entry *lay, size_t n, char **out)
{
    int rc = REAP_OK;
    json_t *root = json_object();
    json_t *meta = json_object();
    *out = NULL;
    /* json_object_set_new steals the value's reference, also on failure; it fails on
     * allocation and on keys that are not valid UTF-8. */
    bool ok = root && meta && json_object_set_new(meta, "format", json_string("pt")) == 0 &&
              json_object_set(root, "__metadata__", meta) == 0;
    for (size_t i = 0; ok && i < n; i++) {
        const st_write_spec *s = &specs[lay[i].index];
        json_t *e = json_object();
        json_t *shape = json_array();
        json_t *off = json_array();
        ok = json_object_set_new(root, s->name, e) == 0;
        if (!ok) {
            json_decref(shape);
            json_decref(off);
            break;
        }
        ok = json_object_set_new(e, "dtype", json_string(st_dtype_name(s->dtype))) == 0 &&
             json_object_set_new(e, "shape", shape) == 0 &&
             json_object_set_new(e, "data_offsets", off) == 0;
        for (int d = 0; ok && d < s->ndim; d++)
            ok = json_array_append_new(shape, json_integer((json_int_t)s->shape[d])) == 0;
        ok = ok && json_array_append_new(off, json_integer((json_int_t)lay[i].begin)) == 0 &&
             json_array_append_new(off, json_integer((json_int_t)(lay[i].begin +
                                                                  lay[i].nbytes))) == 0;
    }
    if (ok)
        *out = json_dumps(root, JSON_COMPACT);
    if (!*out) {
        rc = reap_err_set(REAP_E_INVALID,
                          "%s: could not build the header JSON (out of memory or a tensor "
                          "name that is not valid UTF-8)",
                          path);
        goto fail;
    }
fail:
    json_decref(meta);
    json_decref(root);
    return rc;
}

/* Everything a writer decides before the data: validate and lay out the specs (lay[0..n),
 * *largest: the largest tensor's bytes), refuse duplicate names, build the JSON header
 * (*hdr malloc'd, caller frees, also on failure). */
static int plan_file(const char *path, const st_write_spec *specs, size_t n,
                     struct layout_entry *lay, uint64_t *largest, char **hdr)
{
    int rc;
    if ((rc = plan_layout(path, specs, n, lay, largest)) ||
        (rc = check_duplicates(path, specs, n)) ||
        (rc = build_header(path, specs, lay, n, hdr)))
        return rc;
    return REAP_OK;
}

/* Write the head of the file to fd: the header's length as 8 little-endian bytes, the
 * header, then spaces up to an 8-byte boundary, where the data starts. `tmp` names the
 * file in messages. REAP_OK or REAP_E_IO. */
static int write_head(int fd, const char *tmp, const char *hdr)
{
    static const char spaces[8] = "        ";
    size_t hlen = strlen(hdr);
    size_t pad = (8 - (8 + hlen) % 8) % 8;
    uint64_t total = hlen + pad;
    unsigned char prefix[8];
    int rc;
    for (int i = 0; i < 8; i++)
        prefix[i] = (unsigned char)(total >> (8 * i));
    if ((rc = reap_write_all(fd, prefix, 8, tmp)) || (rc = reap_write_all(fd, hdr, hlen, tmp)) ||
        (rc = reap_write_all(fd, spaces, pad, tmp)))
        return rc;
    return REAP_OK;
}

int st_write_file(const char *path, const st_write_spec *specs, size_t n,
                  st_fill_fn fill, void *ud)
{
    int rc;
    reap_atomic af = {.fd = -1};
    char *hdr = NULL;
    unsigned char *buf = NULL;
    struct layout_entry *lay = NULL;

    lay = calloc(n ? n : 1, sizeof *lay);
    if (!lay) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: out of memory", path);
        goto fail;
    }

    uint64_t largest;
    if ((rc = plan_file(path, specs, n, lay, &largest, &hdr)))
        goto fail;

    buf = malloc(largest ? (size_t)largest : 1);
    if (!buf) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: cannot allocate %llu bytes for the largest tensor",
                          path, (unsigned long long)largest);
        goto fail;
    }

    if ((rc = reap_atomic_open(path, 0644, 0, &af)) || (rc = write_head(af.fd, af.tmp, hdr)))
        goto fail;

    for (size_t i = 0; i < n; i++) {
        rc = fill(ud, lay[i].index, buf, lay[i].nbytes);
        if (rc) {
            reap_err_prefix(rc, "%s: tensor '%s'", path, specs[lay[i].index].name);
            goto fail;
        }
        rc = reap_write_all(af.fd, buf, (size_t)lay[i].nbytes, af.tmp);
        if (rc)
            goto fail;
    }
    rc = reap_atomic_commit(&af); /* releases af, removes the temp file on failure */

fail:
    reap_atomic_abort(&af); /* no-op after the commit */
    free(buf);
    free(hdr);
    free(lay);
    return rc;
}

/* ---- streaming writer ---------------------------------------------------------------- */

struct st_writer {
    char *path;                 /* target, for messages */
    reap_atomic af;             /* the temp file; af.fd -1 once finished or failed */
    size_t n;
    struct layout_entry *lay;   /* [n] file order */
    uint64_t *begin_of;         /* [n] by spec index */
    uint64_t *end_of;           /* [n] by spec index */
    char **names;               /* [n] by spec index, for messages */
    uint64_t total, pos;
    unsigned copy_flags;        /* reap_copy_range flags (REAP_COPY_FALLBACK once refused) */
};

uint64_t st_file_data_offset(const st_file *f) { return 8 + f->header_len; }

static void writer_free(st_writer *w)
{
    if (!w)
        return;
    reap_atomic_abort(&w->af); /* removes the temp file unless committed */
    for (size_t i = 0; w->names && i < w->n; i++)
        free(w->names[i]);
    free(w->names);
    free(w->begin_of);
    free(w->end_of);
    free(w->lay);
    free(w->path);
    free(w);
}

void st_writer_abort(st_writer *w)
{
    writer_free(w); /* aborts the atomic write: the temp file is removed */
}

int st_writer_open(const char *path, const st_write_spec *specs, size_t n,
                   st_writer **out)
{
    int rc;
    char *hdr = NULL;
    st_writer *w = calloc(1, sizeof *w);
    *out = NULL;
    if (!w)
        return reap_err_set(REAP_E_NOMEM, "%s: out of memory", path);
    w->af.fd = -1;
    w->n = n;
    w->path = strdup(path);
    w->lay = calloc(n ? n : 1, sizeof *w->lay);
    w->begin_of = calloc(n ? n : 1, sizeof *w->begin_of);
    w->end_of = calloc(n ? n : 1, sizeof *w->end_of);
    w->names = calloc(n ? n : 1, sizeof *w->names);
    if (!w->path || !w->lay || !w->begin_of || !w->end_of || !w->names) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    uint64_t largest;
    if ((rc = plan_file(path, specs, n, w->lay, &largest, &hdr)))
        goto fail;
    for (size_t i = 0; i < n; i++) {
        size_t s = w->lay[i].index;
        w->begin_of[s] = w->lay[i].begin;
        w->end_of[s] = w->lay[i].begin + w->lay[i].nbytes;
        w->total = w->end_of[s] > w->total ? w->end_of[s] : w->total;
        if (!(w->names[s] = strdup(specs[s].name))) {
            rc = reap_err_set(REAP_E_NOMEM, "%s: out of memory", path);
            goto fail;
        }
    }
    if ((rc = reap_atomic_open(path, 0644, 0, &w->af)) ||
        (rc = write_head(w->af.fd, w->af.tmp, hdr)))
        goto fail;
    free(hdr);
    *out = w;
    return REAP_OK;
fail:
    free(hdr);
    st_writer_abort(w);
    return rc;
}

size_t st_writer_spec_index(const st_writer *w, size_t i)
{
    return i < w->n ? w->lay[i].index : (size_t)-1;
}

uint64_t st_writer_data_size(const st_writer *w) { return w->total; }
uint64_t st_writer_data_pos(const st_writer *w) { return w->pos; }

void st_writer_tensor_range(const st_writer *w, size_t spec_index, uint64_t *begin,
                            uint64_t *end)
{
    *begin = spec_index < w->n ? w->begin_of[spec_index] : 0;
    *end = spec_index < w->n ? w->end_of[spec_index] : 0;
}

static int writer_room(const st_writer *w, uint64_t len)
{
    if (w->af.fd < 0)
        return reap_err_set(REAP_E_INVALID, "%s: writer already failed", w->path);
    if (len > w->total - w->pos)
        return reap_err_set(REAP_E_INVALID,
                            "%s: %llu more bytes would run past the end of the %llu-byte "
                            "data buffer (at %llu)",
                            w->path, (unsigned long long)len, (unsigned long long)w->total,
                            (unsigned long long)w->pos);
    return REAP_OK;
}

int st_writer_write(st_writer *w, const void *buf, size_t len)
{
    int rc = writer_room(w, len);
    if (rc)
        return rc;
    if ((rc = reap_write_all(w->af.fd, buf, len, w->af.tmp)))
        return rc;
    w->pos += len;
    return REAP_OK;
}

int st_writer_copy_fd(st_writer *w, int fd, uint64_t off, uint64_t len)
{
    int rc = writer_room(w, len);
    if (rc)
        return rc;
    if ((rc = reap_copy_range(fd, off, len, w->af.fd, &w->copy_flags, w->path, w->af.tmp)))
        return rc;
    w->pos += len;
    return REAP_OK;
}

int st_writer_finish(st_writer *w)
{
    int rc;
    if (w->af.fd < 0) {
        rc = reap_err_set(REAP_E_INVALID, "%s: writer already failed", w->path);
        goto fail;
    }
    if (w->pos != w->total) {
        const char *name = "?";
        for (size_t i = 0; i < w->n; i++)
            if (w->lay[i].begin + w->lay[i].nbytes > w->pos) {
                name = w->names[w->lay[i].index];
                break;
            }
        rc = reap_err_set(REAP_E_INVALID,
                          "%s: only %llu of %llu data bytes written (tensor '%s' is "
                          "incomplete)",
                          w->path, (unsigned long long)w->pos, (unsigned long long)w->total,
                          name);
        goto fail;
    }
    rc = reap_atomic_commit(&w->af); /* removes the temp file on failure */
    writer_free(w);
    return rc;
fail:
    st_writer_abort(w);
    return rc;
}
