/* layer_gate.c - the test gate of reap-scorer serve (--layer-gate FIFO): one byte read per
 * layer, EOF opens it for good. See layer_gate.h. */
#include "layer_gate.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void scorer_layer_gate_init(scorer_layer_gate *g, const char *path)
{
    scorer_layer_gate z = {.path = path && *path ? path : NULL, .fd = -1,
                           .mu = PTHREAD_MUTEX_INITIALIZER};
    z.open_for_good = z.path == NULL;
    *g = z;
}

void scorer_layer_gate_wait(void *gate)
{
    scorer_layer_gate *g = gate;
    char c;
    ssize_t r;
    pthread_mutex_lock(&g->mu);
    if (g->open_for_good)
        goto out;
    if (g->fd < 0) {
        do
            g->fd = open(g->path, O_RDONLY | O_CLOEXEC);
        while (g->fd < 0 && errno == EINTR);
        if (g->fd < 0) {
            fprintf(stderr, "reap-scorer: --layer-gate %s: %s (gate opened)\n", g->path,
                    strerror(errno));
            g->open_for_good = 1;
            goto out;
        }
    }
    do
        r = read(g->fd, &c, 1);
    while (r < 0 && errno == EINTR);
    if (r != 1) {
        if (r < 0)
            fprintf(stderr, "reap-scorer: --layer-gate %s: %s (gate opened)\n", g->path,
                    strerror(errno));
        g->open_for_good = 1;
    }
out:
    pthread_mutex_unlock(&g->mu);
}

void scorer_layer_gate_free(scorer_layer_gate *g)
{
    if (g->fd >= 0)
        close(g->fd);
    g->fd = -1;
}
