/* layer_gate.h - `reap-scorer serve --layer-gate FIFO`: an explicit gate that tests use to
 * hold scoring runs at a layer boundary instead of relying on how fast a run goes.
 *
 * Before each layer a worker reads one byte from the FIFO: the test writes one byte per
 * layer it lets through, and closing its end (EOF) opens the gate for good. The FIFO is
 * opened on the first read (blocking until a writer has it open; a test opens its end
 * O_RDWR first). Bytes are read under one mutex, so with several workers each byte lets
 * exactly one layer of one run through. Plugged into reap_rm_opts.layer_gate.
 *
 * Thread rules: scorer_layer_gate_wait is thread-safe; init before the run manager starts,
 * free after it has ended.
 */
#ifndef REAP_LAYER_GATE_H
#define REAP_LAYER_GATE_H

#include <pthread.h>

typedef struct scorer_layer_gate {
    const char *path;      /* the FIFO (not copied); NULL: no gate */
    int fd;                /* -1 until the first wait */
    int open_for_good;     /* EOF or an error was seen: never wait again */
    pthread_mutex_t mu;
} scorer_layer_gate;

/* Set up a gate on `path` (NULL or "": a gate that never waits). Calling it again on a
 * gate that has not been used (no wait yet) is allowed. */
void scorer_layer_gate_init(scorer_layer_gate *g, const char *path);

/* reap_rm_opts.layer_gate: wait for one byte (or EOF) from the FIFO. An open or read
 * error is logged once to stderr and opens the gate for good (a run never hangs on a
 * broken gate). */
void scorer_layer_gate_wait(void *gate);

/* Close the FIFO. */
void scorer_layer_gate_free(scorer_layer_gate *g);

#endif
