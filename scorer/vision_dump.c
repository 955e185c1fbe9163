/* vision_dump.c - the test dump of a run's vision step (vision_dump.h). */
#include "vision_dump.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "reap_err.h"

struct scorer_vision_dump {
    char dir[4096];
    FILE *patches;
    int64_t n_patches;
    int32_t *grids;        /* [n_grids, 3] */
    int n_grids, cap;
};

static FILE *dump_fopen(const scorer_vision_dump *d, const char *name, char *path, size_t n)
{
    snprintf(path, n, "%s/%s", d->dir, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        reap_err_set(REAP_E_IO, "%s: %s", path, strerror(errno));
    return f;
}

static int dump_fclose(FILE *f, const char *path, int ok)
{
    if (fclose(f) || !ok)
        return reap_err_set(REAP_E_IO, "%s: cannot write", path);
    return REAP_OK;
}

int scorer_vision_dump_open(const char *dir, scorer_vision_dump **out)
{
    char path[4200];
    scorer_vision_dump *d = calloc(1, sizeof *d);
    *out = NULL;
    if (!d)
        return reap_err_set(REAP_E_NOMEM, "vision dump");
    snprintf(d->dir, sizeof d->dir, "%s", dir);
    if (mkdir(dir, 0755) && errno != EEXIST) {
        free(d);
        return reap_err_set(REAP_E_IO, "%s: %s", dir, strerror(errno));
    }
    if (!(d->patches = dump_fopen(d, "patches.f32", path, sizeof path))) {
        free(d);
        return REAP_E_IO;
    }
    *out = d;
    return REAP_OK;
}

int scorer_vision_dump_batch(scorer_vision_dump *d, const reap_score_vision_batch *b)
{
    size_t n = (size_t)(b->n_patches * b->patch_dim);
    if (fwrite(b->patches, sizeof(float), n, d->patches) != n)
        return reap_err_set(REAP_E_IO, "%s/patches.f32: cannot write", d->dir);
    if (d->n_grids + b->n > d->cap) {
        int cap = (d->n_grids + b->n) * 2;
        int32_t *g = realloc(d->grids, (size_t)cap * 3 * sizeof *g);
        if (!g)
            return reap_err_set(REAP_E_NOMEM, "vision dump");
        d->grids = g;
        d->cap = cap;
    }
    memcpy(d->grids + 3 * d->n_grids, b->grids, (size_t)b->n * 3 * sizeof *b->grids);
    d->n_grids += b->n;
    d->n_patches += b->n_patches;
    return REAP_OK;
}

int scorer_vision_dump_features(scorer_vision_dump *d, const reap_rows *rows,
                                const reap_image_features *f, int hidden)
{
    char path[4200];
    FILE *fp;
    int ok, rc;
    size_t n = (size_t)(f->n_image_tokens * hidden);

    if (fflush(d->patches))
        return reap_err_set(REAP_E_IO, "%s/patches.f32: cannot write", d->dir);
    if (!(fp = dump_fopen(d, "out.f32", path, sizeof path)))
        return REAP_E_IO;
    ok = fwrite(f->merged, sizeof(float), n, fp) == n;
    if ((rc = dump_fclose(fp, path, ok)))
        return rc;
    if (!(fp = dump_fopen(d, "deep.f32", path, sizeof path)))
        return REAP_E_IO;
    ok = 1;
    for (int k = 0; k < f->n_deepstack; k++)
        ok = ok && fwrite(f->deepstack[k], sizeof(float), n, fp) == n;
    if ((rc = dump_fclose(fp, path, ok)))
        return rc;

    if (!(fp = dump_fopen(d, "meta.json", path, sizeof path)))
        return REAP_E_IO;
    fprintf(fp, "{\"grids\": [");
    for (int i = 0; i < d->n_grids; i++)
        fprintf(fp, "%s[%d, %d, %d]", i ? ", " : "", d->grids[3 * i], d->grids[3 * i + 1],
                d->grids[3 * i + 2]);
    fprintf(fp, "], \"n_patches\": %lld, \"n_tokens\": %lld, \"n_deepstack\": %d, "
                "\"merge\": %d, \"spans\": [", (long long)d->n_patches,
            (long long)f->n_image_tokens, f->n_deepstack, f->spatial_merge);
    for (int64_t i = 0; i < rows->n_spans; i++)
        fprintf(fp, "%s{\"row\": %d, \"start\": %d, \"image\": %d}", i ? ", " : "",
                rows->spans[i].row, rows->spans[i].start, rows->spans[i].image);
    ok = fprintf(fp, "]}\n") > 0;
    if ((rc = dump_fclose(fp, path, ok)))
        return rc;

    if (!(fp = dump_fopen(d, "rows.json", path, sizeof path)))
        return REAP_E_IO;
    fprintf(fp, "{\"seq_len\": %d, \"tokens\": [", rows->seq_len);
    for (int r = 0; r < rows->n_rows; r++) {
        fprintf(fp, "%s[", r ? ", " : "");
        for (int s = 0; s < rows->seq_len; s++)
            fprintf(fp, "%s%d", s ? "," : "", rows->tokens[(int64_t)r * rows->seq_len + s]);
        fprintf(fp, "]");
    }
    fprintf(fp, "], \"mask\": [");
    for (int r = 0; r < rows->n_rows; r++) {
        fprintf(fp, "%s[", r ? ", " : "");
        for (int s = 0; s < rows->seq_len; s++)
            fprintf(fp, "%s%d", s ? "," : "", rows->mask[(int64_t)r * rows->seq_len + s]);
        fprintf(fp, "]");
    }
    ok = fprintf(fp, "]}\n") > 0;
    return dump_fclose(fp, path, ok);
}

void scorer_vision_dump_close(scorer_vision_dump *d)
{
    if (!d)
        return;
    if (d->patches)
        fclose(d->patches);
    free(d->grids);
    free(d);
}
