/* record_info.c - the free functions of the store's record structures (record_info.h). */
#include "record_info.h"

#include <stdlib.h>
#include <string.h>

void reap_model_info_free(reap_model_info *m)
{
    if (!m)
        return;
    for (int i = 0; m->files && i < m->n_files; i++)
        free(m->files[i].path);
    free(m->files);
    free(m->moe_layers);
    free(m->model_type);
    free(m->first_seen_path);
    memset(m, 0, sizeof *m);
}

void reap_calib_info_free(reap_calib_info *c)
{
    if (!c)
        return;
    free(c->source);
    memset(c, 0, sizeof *c);
}

void reap_run_info_free(reap_run_info *r)
{
    if (!r)
        return;
    free(r->backend);
    free(r->device);
    free(r->error);
    free(r->host);
    free(r->request);
    free(r->layer_seconds);
    memset(r, 0, sizeof *r);
}
