/* test_store_proc.c - the store across processes: a reader process sees consistent
 * snapshots while a writer process commits layers (the run record and the statistics of
 * a layer appear together); map growth by one process adopted by another
 * (MDB_MAP_RESIZED); the reader slot of a process killed inside a read transaction is
 * cleared. Every child is forked before the parent opens the store (an LMDB environment
 * must not cross fork()). */
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "runs.h"
#include "stats_store.h"
#include "store.h"
#include "test_store_util.h"
#include "test_util.h"

#define N_LAYERS 40
#define E 64

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static int wait_child(pid_t pid)
{
    int status = 0;
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Child: commit N_LAYERS layers of one run, a few ms apart, waiting after the first half
 * for a byte on mid_fd (the reader has seen the run half done: the two overlapped, however
 * fast either is). Exit status 0 on success. */
static int writer_child(const char *dir, int start_fd, int mid_fd)
{
    reap_store *s = NULL;
    reap_store_opts o = {.create = 1, .map_size = 64 << 10};
    reap_run_info run;
    reap_id m, c;
    char go;
    int rc;
    if (read(start_fd, &go, 1) != 1)
        return 10;
    if ((rc = reap_store_open(dir, &o, &s)))
        return 11;
    fake_id(&m, 1);
    fake_id(&c, 2);
    if (reap_store_run_begin(s, NULL, &m, &c, N_LAYERS, 0, "cpu", NULL, NULL, &run))
        return 12;
    for (int l = 0; l < N_LAYERS; l++) {
        reap_layer_stats st;
        if (make_stats(&st, l, E, 4) || reap_store_run_commit_layer(s, &run, l, 0.001, &st, NULL))
            return 13;
        reap_layer_stats_free(&st);
        if (l + 1 == N_LAYERS / 2 && read(mid_fd, &go, 1) != 1)
            return 14;
        sleep_ms(3);
    }
    reap_store_run_finish(s, &run, REAP_RUN_DONE, NULL);
    reap_run_info_free(&run);
    reap_store_close(s);
    return 0;
}

static void test_reader_writer(void)
{
    char dir[1024];
    int pipefd[2];
    reap_store *s = NULL;
    reap_store_opts o = {.create = 1, .map_size = 64 << 10};
    reap_id m, c;
    spath(dir, sizeof dir, "rw");
    /* Create the store and the model record first, then fork. */
    CHECK_RC(reap_store_open(dir, &o, &s), REAP_OK);
    fake_id(&m, 1);
    fake_id(&c, 2);
    CHECK_RC(put_model(s, &m, N_LAYERS, E), REAP_OK);
    reap_store_close(s);
    s = NULL;
    int midfd[2];
    CHECK(pipe(pipefd) == 0 && pipe(midfd) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(pipefd[1]);
        close(midfd[1]);
        _exit(writer_child(dir, pipefd[0], midfd[0]));
    }
    close(pipefd[0]);
    close(midfd[0]);
    reap_store_opts ro = {.readonly = 1};
    CHECK_RC(reap_store_open(dir, &ro, &s), REAP_OK);
    CHECK(write(pipefd[1], "g", 1) == 1);
    close(pipefd[1]);
    int snapshots = 0, inconsistent = 0, bad = 0, last_done = -1, done_state = 0;
    int saw_middle = 0;
    for (int iter = 0; iter < 20000 && !done_state && s; iter++) {
        reap_store_snap *snap = NULL;
        reap_run_info *runs = NULL;
        int nr = 0, *layers = NULL, nl = 0;
        if (reap_store_snap_begin(s, &snap)) {
            bad++;
            break;
        }
        if (reap_store_run_list(s, snap, &runs, &nr) ||
            reap_store_stats_layers(s, snap, &m, &c, &layers, &nl))
            bad++;
        if (nr == 1) {
            /* The run record and the statistics are committed together. */
            inconsistent += runs[0].layers_done != nl;
            if (runs[0].layers_done < last_done)
                inconsistent++;
            last_done = runs[0].layers_done;
            done_state = runs[0].state == REAP_RUN_DONE;
            if (!saw_middle && last_done == N_LAYERS / 2 && !done_state) {
                saw_middle = 1; /* the writer waits here for us */
                CHECK(write(midfd[1], "g", 1) == 1);
            }
            for (int i = 0; i < nl; i++) {
                reap_layer_stats st;
                bad += reap_store_stats_get(s, snap, &m, &c, layers[i], &st) != REAP_OK;
                reap_layer_stats_free(&st);
            }
        }
        snapshots++;
        for (int i = 0; i < nr; i++)
            reap_run_info_free(&runs[i]);
        free(runs);
        free(layers);
        reap_store_snap_end(snap);
        sleep_ms(1);
    }
    close(midfd[1]);   /* a reader that never saw the middle: the writer fails (14) */
    CHECK(wait_child(pid) == 0);
    CHECK_MSG(inconsistent == 0 && bad == 0, "%d inconsistent, %d bad snapshots", inconsistent,
              bad);
    CHECK(done_state && last_done == N_LAYERS);
    CHECK(saw_middle); /* snapshots were taken while the writer was mid-run */
    printf("reader/writer: %d snapshots while the writer committed %d layers; 0 inconsistent\n",
           snapshots, N_LAYERS);
    reap_store_close(s);
}

/* The writer above grew the map from 64 KiB; a process that opened before the growth
 * adopts it when it next begins a transaction. */
static void test_growth_adoption(void)
{
    char dir[1024];
    int go[2], done[2];
    reap_store *s = NULL;
    reap_store_opts tiny = {.create = 1, .map_size = 64 << 10};
    reap_id m, c;
    spath(dir, sizeof dir, "adopt");
    CHECK_RC(reap_store_open(dir, &tiny, &s), REAP_OK);
    reap_store_close(s);
    s = NULL;
    fake_id(&m, 5);
    fake_id(&c, 6);
    CHECK(pipe(go) == 0 && pipe(done) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        char b;
        int ok = 1;
        close(go[1]);
        close(done[0]);
        if (read(go[0], &b, 1) != 1 || reap_store_open(dir, &tiny, &s) ||
            put_model(s, &m, 50, 256))
            _exit(20);
        for (int l = 0; l < 50 && ok; l++) {
            reap_layer_stats st;
            ok = !make_stats(&st, l, 256, 8) &&
                 !reap_store_stats_put(s, &m, &c, &st, "cpu", NULL);
            reap_layer_stats_free(&st);
        }
        size_t grown = reap_store_map_size(s);
        reap_store_close(s);
        _exit(ok && grown > ((size_t)64 << 10) && write(done[1], "d", 1) == 1 ? 0 : 21);
    }
    close(go[0]);
    close(done[1]);
    CHECK_RC(reap_store_open(dir, &tiny, &s), REAP_OK);
    size_t before = s ? reap_store_map_size(s) : 0;
    char b;
    CHECK(write(go[1], "g", 1) == 1);
    CHECK(read(done[0], &b, 1) == 1);
    CHECK(wait_child(pid) == 0);
    if (s) {
        reap_layer_stats got;
        CHECK_RC(reap_store_stats_get(s, NULL, &m, &c, 49, &got), REAP_OK);
        reap_layer_stats_free(&got);
        reap_layer_stats st;
        make_stats(&st, 50, 256, 8);
        CHECK_RC(reap_store_stats_put(s, &m, &c, &st, "cpu", NULL), REAP_OK);
        reap_layer_stats_free(&st);
        size_t after = reap_store_map_size(s);
        CHECK_MSG(after > before, "map %zu -> %zu", before, after);
        printf("growth adoption: this process's map %zu KiB -> %zu KiB after the other "
               "process grew it\n", before >> 10, after >> 10);
        reap_store_close(s);
    }
    close(go[1]);
    close(done[0]);
}

static void test_stale_reader(void)
{
    char dir[1024];
    int ready[2];
    reap_store *s = NULL;
    reap_store_opts o = {.create = 1};
    spath(dir, sizeof dir, "stale");
    CHECK_RC(reap_store_open(dir, &o, &s), REAP_OK);
    reap_store_close(s);
    s = NULL;
    CHECK(pipe(ready) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        reap_store_snap *snap;
        close(ready[0]);
        if (reap_store_open(dir, NULL, &s) || reap_store_snap_begin(s, &snap))
            _exit(30);
        if (write(ready[1], "r", 1) != 1)
            _exit(31);
        for (;;)
            pause(); /* killed inside the read transaction */
    }
    close(ready[1]);
    char b;
    CHECK(read(ready[0], &b, 1) == 1);
    close(ready[0]);
    CHECK_RC(reap_store_open(dir, NULL, &s), REAP_OK);
    int cleared = -1;
    CHECK_RC(reap_store_reader_check(s, &cleared), REAP_OK);
    CHECK(cleared == 0); /* the child is alive */
    kill(pid, SIGKILL);
    CHECK(wait_child(pid) == 128 + SIGKILL);
    CHECK_RC(reap_store_reader_check(s, &cleared), REAP_OK);
    CHECK_MSG(cleared == 1, "cleared %d", cleared);
    printf("stale reader: %d slot cleared after kill -9 of a reader\n", cleared);
    reap_store_close(s);
}

int main(int argc, char **argv)
{
    scratch = argc > 1 ? argv[1] : "/tmp/test_store_proc";
    rm_rf(scratch);
    mkdir(scratch, 0755);
    test_reader_writer();
    test_growth_adoption();
    test_stale_reader();
    TEST_MAIN_END();
}
