/* checkpoint.c - open a Hugging Face checkpoint directory and index its tensors.
 *
 * With model.safetensors.index.json: the weight_map (tensor -> shard file name) is read
 * with jansson, every distinct shard is opened once (and so fully validated by
 * st_file_open), each mapped tensor must live in the shard the index names, and
 * metadata.total_size, when it is an integer, must equal the shards' data bytes.
 * Without an index the single model.safetensors is opened. Tensors of all shards go into
 * one name-sorted table (a name in two shards is an error) searched by binary search.
 */
#include "checkpoint.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "reap_err.h"

#define CKPT_INDEX_NAME "model.safetensors.index.json"
#define CKPT_SINGLE_NAME "model.safetensors"

struct ckpt_entry {
    const st_tensor *t;
    size_t file;        /* index into files */
};

struct reap_ckpt {
    char *dir;
    const reap_roots *roots;    /* reads confined to these (NULL: unconfined); borrowed */
    size_t n_files;
    st_file **files;            /* [n_files], sorted by file name */
    char **file_names;          /* [n_files], names relative to dir */
    size_t n_entries;
    struct ckpt_entry *entries; /* [n_entries], sorted by tensor name */
};

static char *path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a == 0 || dir[a - 1] != '/')
        p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

/* 1 if path is present, 0 if absent (ENOENT/ENOTDIR), REAP_E_IO otherwise. */
static int path_exists(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) == 0)
        return 1;
    if (errno == ENOENT || errno == ENOTDIR)
        return 0;
    return reap_err_set(REAP_E_IO, "%s: stat: %s", path, strerror(errno));
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_entry(const void *a, const void *b)
{
    const struct ckpt_entry *x = a, *y = b;
    return strcmp(x->t->name, y->t->name);
}

static const struct ckpt_entry *find_entry(const reap_ckpt *c, const char *name)
{
    size_t lo = 0, hi = c->n_entries;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = strcmp(c->entries[mid].t->name, name);
        if (r == 0)
            return &c->entries[mid];
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Open shard `name` (relative to c->dir) as file slot c->n_files. */
static int open_shard(reap_ckpt *c, const char *name, const char *index_path)
{
    int rc;
    char *path = NULL;
    size_t i = c->n_files;

    path = path_join(c->dir, name);
    if (!path) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: out of memory", c->dir);
        goto fail;
    }
    rc = path_exists(path);
    if (rc < 0)
        goto fail;
    if (rc == 0) {
        rc = index_path ? reap_err_set(REAP_E_NOTFOUND, "%s names shard '%s' but %s is missing",
                                       index_path, name, path)
                        : reap_err_set(REAP_E_NOTFOUND, "%s is missing", path);
        goto fail;
    }
    c->file_names[i] = strdup(name);
    if (!c->file_names[i]) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: out of memory", c->dir);
        goto fail;
    }
    c->n_files++; /* counted now so close frees the name */
    rc = st_file_open_confined(path, c->roots, &c->files[i]);

fail:
    free(path);
    return rc;
}

/* Build the name-sorted table over every tensor of every opened file. */
static int build_lookup(reap_ckpt *c)
{
    size_t n = 0;
    for (size_t f = 0; f < c->n_files; f++)
        n += st_file_n_tensors(c->files[f]);
    if (n == 0)
        return REAP_OK;
    c->entries = malloc(n * sizeof *c->entries);
    if (!c->entries)
        return reap_err_set(REAP_E_NOMEM, "%s: out of memory for %zu tensors", c->dir, n);
    for (size_t f = 0; f < c->n_files; f++) {
        for (size_t k = 0; k < st_file_n_tensors(c->files[f]); k++) {
            c->entries[c->n_entries].t = st_file_tensor(c->files[f], k);
            c->entries[c->n_entries].file = f;
            c->n_entries++;
        }
    }
    qsort(c->entries, n, sizeof *c->entries, cmp_entry);
    for (size_t i = 1; i < n; i++) {
        const struct ckpt_entry *a = &c->entries[i - 1], *b = &c->entries[i];
        if (strcmp(a->t->name, b->t->name) == 0) {
            const char *fa = c->file_names[a->file], *fb = c->file_names[b->file];
            if (strcmp(fa, fb) > 0) {
                const char *x = fa;
                fa = fb;
                fb = x;
            }
            return reap_err_set(REAP_E_FORMAT, "%s: tensor '%s' is in two shards: %s and %s",
                                c->dir, a->t->name, fa, fb);
        }
    }
    return REAP_OK;
}

static bool shard_name_ok(const char *s)
{
    return s[0] != '\0' && strchr(s, '/') == NULL && strstr(s, "..") == NULL;
}

/* Read the index, open its shards and check the index against them. */
static int open_indexed(reap_ckpt *c, const char *index_path)
{
    int rc;
    json_error_t jerr;
    const char **names = NULL;
    json_t *root = NULL;
    FILE *fp = NULL;
    if ((rc = reap_fopen_read(index_path, c->roots, &fp)))
        goto fail;
    root = json_loadf(fp, JSON_REJECT_DUPLICATES, &jerr);
    fclose(fp);
    if (!root) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: JSON: %s (line %d, column %d)", index_path,
                          jerr.text, jerr.line, jerr.column);
        goto fail;
    }
    if (!json_is_object(root)) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: not a JSON object", index_path);
        goto fail;
    }
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm)) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: weight_map missing or not an object",
                          index_path);
        goto fail;
    }
    size_t n_map = json_object_size(wm);
    if (n_map == 0) {
        rc = reap_err_set(REAP_E_FORMAT, "%s: weight_map is empty", index_path);
        goto fail;
    }

    /* Distinct shard names, sorted. */
    names = malloc(n_map * sizeof *names);
    if (!names) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: out of memory", index_path);
        goto fail;
    }
    size_t n_names = 0;
    const char *key;
    json_t *val;
    json_object_foreach(wm, key, val) {
        if (!json_is_string(val)) {
            rc = reap_err_set(REAP_E_FORMAT, "%s: weight_map['%s'] is not a string",
                              index_path, key);
            goto fail;
        }
        const char *shard = json_string_value(val);
        if (!shard_name_ok(shard)) {
            rc = reap_err_set(REAP_E_FORMAT,
                              "%s: weight_map['%s'] = '%s' is not a plain file name in the "
                              "checkpoint directory",
                              index_path, key, shard);
            goto fail;
        }
        names[n_names++] = shard;
    }
    qsort(names, n_names, sizeof *names, cmp_str_ptr);
    size_t n_distinct = 0;
    for (size_t i = 0; i < n_names; i++)
        if (i == 0 || strcmp(names[i], names[n_distinct - 1]) != 0)
            names[n_distinct++] = names[i];

    c->files = calloc(n_distinct, sizeof *c->files);
    c->file_names = calloc(n_distinct, sizeof *c->file_names);
    if (!c->files || !c->file_names) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: out of memory", index_path);
        goto fail;
    }
    for (size_t i = 0; i < n_distinct; i++) {
        rc = open_shard(c, names[i], index_path);
        if (rc)
            goto fail;
    }
    rc = build_lookup(c);
    if (rc)
        goto fail;

    /* Every mapped tensor must be in the shard the index names. */
    json_object_foreach(wm, key, val) {
        const char *shard = json_string_value(val);
        const struct ckpt_entry *e = find_entry(c, key);
        if (!e) {
            rc = reap_err_set(REAP_E_FORMAT,
                              "%s: tensor '%s' is mapped to shard %s, which has no such "
                              "tensor",
                              index_path, key, shard);
            goto fail;
        }
        if (strcmp(c->file_names[e->file], shard) != 0) {
            rc = reap_err_set(REAP_E_FORMAT,
                              "%s: tensor '%s' is mapped to shard %s, which has no such "
                              "tensor (it is in %s)",
                              index_path, key, shard, c->file_names[e->file]);
            goto fail;
        }
    }

    /* metadata.total_size, when an integer, must match the shards' data bytes. */
    json_t *meta = json_object_get(root, "metadata");
    json_t *ts = json_is_object(meta) ? json_object_get(meta, "total_size") : NULL;
    if (json_is_integer(ts)) {
        uint64_t sum = 0;
        for (size_t i = 0; i < c->n_entries; i++)
            sum += c->entries[i].t->nbytes;
        json_int_t want = json_integer_value(ts);
        if (want < 0 || (uint64_t)want != sum) {
            rc = reap_err_set(REAP_E_FORMAT,
                              "%s: metadata.total_size is %lld but the shards hold %llu bytes "
                              "of tensor data",
                              index_path, (long long)want, (unsigned long long)sum);
            goto fail;
        }
    }
    rc = REAP_OK;

fail:
    free(names);
    json_decref(root);
    return rc;
}

int reap_ckpt_open(const char *dir, reap_ckpt **out)
{
    return reap_ckpt_open_confined(dir, NULL, out);
}

const reap_roots *reap_ckpt_roots(const reap_ckpt *c)
{
    return c->roots;
}

int reap_ckpt_open_confined(const char *dir, const reap_roots *roots, reap_ckpt **out)
{
    int rc;
    char *index_path = NULL;
    char *single_path = NULL;
    reap_ckpt *c = NULL;
    *out = NULL;

    c = calloc(1, sizeof *c);
    if (!c || !(c->dir = strdup(dir))) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: out of memory", dir);
        goto fail;
    }
    c->roots = roots;
    index_path = path_join(dir, CKPT_INDEX_NAME);
    single_path = path_join(dir, CKPT_SINGLE_NAME);
    if (!index_path || !single_path) {
        rc = reap_err_set(REAP_E_NOMEM, "%s: out of memory", dir);
        goto fail;
    }

    rc = path_exists(index_path);
    if (rc < 0)
        goto fail;
    if (rc == 1) {
        rc = open_indexed(c, index_path);
        if (rc)
            goto fail;
    } else {
        rc = path_exists(single_path);
        if (rc < 0)
            goto fail;
        if (rc == 0) {
            rc = reap_err_set(REAP_E_NOTFOUND, "no %s or %s in %s", CKPT_INDEX_NAME,
                              CKPT_SINGLE_NAME, dir);
            goto fail;
        }
        c->files = calloc(1, sizeof *c->files);
        c->file_names = calloc(1, sizeof *c->file_names);
        if (!c->files || !c->file_names) {
            rc = reap_err_set(REAP_E_NOMEM, "%s: out of memory", dir);
            goto fail;
        }
        rc = open_shard(c, CKPT_SINGLE_NAME, NULL);
        if (rc)
            goto fail;
        rc = build_lookup(c);
        if (rc)
            goto fail;
    }
    *out = c;
    c = NULL;
    rc = REAP_OK;

fail:
    reap_ckpt_close(c);
    free(index_path);
    free(single_path);
    return rc;
}

void reap_ckpt_close(reap_ckpt *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_files; i++) {
        st_file_close(c->files[i]);
        free(c->file_names[i]);
    }
    free(c->files);
    free(c->file_names);
    free(c->entries);
    free(c->dir);
    free(c);
}

const char *reap_ckpt_dir(const reap_ckpt *c) { return c->dir; }
size_t reap_ckpt_n_files(const reap_ckpt *c) { return c->n_files; }

const st_file *reap_ckpt_file(const reap_ckpt *c, size_t i)
{
    return i < c->n_files ? c->files[i] : NULL;
}

const st_tensor *reap_ckpt_find(const reap_ckpt *c, const char *name)
{
    const struct ckpt_entry *e = find_entry(c, name);
    return e ? e->t : NULL;
}

int reap_ckpt_get(const reap_ckpt *c, const char *name, const st_tensor **out)
{
    const struct ckpt_entry *e = find_entry(c, name);
    *out = e ? e->t : NULL;
    if (!e)
        return reap_err_set(REAP_E_NOTFOUND, "tensor '%s' not found in checkpoint %s", name,
                            c->dir);
    return REAP_OK;
}
