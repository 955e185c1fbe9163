/* fuzz_store_import.c - reap_store_import() of arbitrary bytes as an export file
 * (store/export.h: magic, length-prefixed ExportFrame messages, record digests, trailer)
 * into a store in the harness's temporary directory.
 *
 * Every input meets an empty store: a failed import changes nothing (the whole file is
 * verified before anything is written), and after an import that added records the store
 * is removed and made again.
 */
#include "export.h"
#include "fuzz_util.h"
#include "reap_err.h"
#include "store.h"

static reap_store *store;
static char store_dir[8192];

static void close_store(void)
{
    reap_store_close(store);
    store = NULL;
    fuzz_rm_tree_(store_dir);
}

static void open_store(void)
{
    reap_store_opts so = {.create = 1, .map_size = 64u << 20};

    fuzz_path(store_dir, sizeof store_dir, "store");
    if (reap_store_open(store_dir, &so, &store) != REAP_OK) {
        fprintf(stderr, "fuzz_store_import: %s\n", reap_err_msg());
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fuzz_file in;
    static int registered;
    reap_import_counts c = {0};

    if (!registered) {
        fuzz_tmpdir();          /* its removal registered first: runs after close_store */
        atexit(close_store);
        registered = 1;
    }
    if (!store)
        open_store();
    if (FUZZ_RC(reap_store_import(store, fuzz_memfd_set(&in, data, size), &c)) == REAP_OK &&
        c.added > c.records)
        abort();                /* more records added than the file holds */
    if (c.added)
        close_store();
    return 0;
}
