/* fuzz_safetensors.c - st_file_open() on arbitrary bytes (the safetensors header parser
 * and its validation), then every accessor on what it accepted. */
#include "fuzz_util.h"
#include "reap_err.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fuzz_file in;
    st_file *f = NULL;
    size_t i, n;
    uint64_t sum = 0;

    if (FUZZ_RC(st_file_open(fuzz_memfd_set(&in, data, size), &f)) != REAP_OK)
        return 0;
    n = st_file_n_tensors(f);
    for (i = 0; i < n; i++) {
        const st_tensor *t = st_file_tensor(f, i);
        if (st_file_find(f, t->name) != t)
            abort();            /* every tensor is found by its own name */
        if (t->nbytes)          /* the data must be readable where the header says */
            sum += ((const uint8_t *)t->data)[0] + ((const uint8_t *)t->data)[t->nbytes - 1];
        (void)st_dtype_name(t->dtype);
    }
    (void)st_file_metadata(f, "format");
    (void)st_file_find(f, "");
    (void)st_file_data_offset(f);
    st_file_close(f);
    return (int)(sum & 0);
}
