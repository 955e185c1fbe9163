/* safetensors.h - validated, mmap-based reading and streaming writing of .safetensors.
 *
 * File layout: u64 little-endian header length N, N bytes of JSON (may be padded with
 * spaces), then the data buffer. st_file_open() validates everything the official reader
 * validates before any tensor is exposed: N <= 100,000,000 and 8 + N <= file size, JSON
 * well formed (object of objects, "__metadata__" string->string), known dtypes,
 * data_offsets [begin, end] with end - begin == prod(shape) * bits(dtype) / 8, no
 * duplicate names, and the offsets sorted by begin cover the data buffer exactly (no
 * holes, overlaps or trailing bytes).
 *
 * Thread rules: an st_file is immutable after open; any number of threads may read it.
 * Lifetime: st_tensor pointers and their data stay valid until st_file_close().
 */
#ifndef REAP_SAFETENSORS_H
#define REAP_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "fsopen.h"

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER 100000000ULL

typedef enum st_dtype {
    ST_BOOL, ST_U8, ST_I8, ST_F8_E5M2, ST_F8_E4M3,
    ST_I16, ST_U16, ST_F16, ST_BF16,
    ST_I32, ST_U32, ST_F32,
    ST_I64, ST_U64, ST_F64,
    ST_DTYPE_COUNT
} st_dtype;

typedef struct st_tensor {
    const char *name;             /* NUL-terminated, owned by the st_file */
    st_dtype dtype;
    int ndim;                     /* 0..ST_MAX_DIMS */
    int64_t shape[ST_MAX_DIMS];
    uint64_t begin, end;          /* data_offsets, relative to the data buffer */
    const void *data;             /* points into the mapping: begin of this tensor */
    uint64_t nbytes;              /* end - begin */
    int64_t numel;                /* prod(shape), 1 for a scalar */
} st_tensor;

typedef struct st_file st_file;

/* Map and validate `path`. On success *out is a new handle (close with st_file_close).
 * Returns REAP_OK, REAP_E_IO (open/stat/mmap failed), REAP_E_NOTFOUND (no such file),
 * REAP_E_INVALID (not a regular file: a FIFO is refused without waiting, fsopen.h),
 * REAP_E_FORMAT (any validation
 * failure; the message names the file and the offending tensor or field). */
int st_file_open(const char *path, st_file **out);

/* st_file_open for a service: `path` must also lie under `roots` once its links are
 * resolved (fsopen.h; NULL: unconfined), else REAP_E_DENIED naming the file. Not a
 * regular file (a FIFO, ...): REAP_E_INVALID, without waiting. */
int st_file_open_confined(const char *path, const reap_roots *roots, st_file **out);

/* Unmap and free. NULL is allowed. */
void st_file_close(st_file *f);

const char *st_file_path(const st_file *f);
uint64_t st_file_size(const st_file *f);       /* bytes on disk */
size_t st_file_n_tensors(const st_file *f);
/* i-th tensor in ascending data offset order (0 <= i < n_tensors). */
const st_tensor *st_file_tensor(const st_file *f, size_t i);
/* Tensor by exact name, NULL if absent. O(log n). */
const st_tensor *st_file_find(const st_file *f, const char *name);
/* Value of __metadata__[key], NULL if absent. */
const char *st_file_metadata(const st_file *f, const char *key);

/* dtype helpers. st_dtype_from_name returns REAP_E_FORMAT for unknown names. */
int st_dtype_from_name(const char *s, st_dtype *out);
const char *st_dtype_name(st_dtype d);

/* "[2, 3]" (ndim dimensions of shape) into buf of cap bytes, cut short if it does not
 * fit; returns buf. For messages. */
const char *st_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape);
unsigned st_dtype_bits(st_dtype d);

/* ---- writing -------------------------------------------------------------------- */

typedef struct st_write_spec {
    const char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
} st_write_spec;

/* Produces the bytes of tensor `index` (an index into the spec array) into dst
 * (exactly nbytes). Return REAP_OK or a negative status (which aborts the write). */
typedef int (*st_fill_fn)(void *ud, size_t index, void *dst, uint64_t nbytes);

/* Write a safetensors file from `n` specs, streaming: tensors are laid out by descending
 * dtype alignment then by name, the header is padded with spaces so the data starts at
 * a multiple of 8, "__metadata__" is {"format": "pt"}; fill() is called once per tensor
 * in layout order with a buffer of that tensor's size (memory use: the largest tensor).
 * The file is written to "<path>.tmp", fsynced and renamed to path.
 * Returns REAP_OK, REAP_E_INVALID (duplicate names, bad shape), REAP_E_IO, or fill's
 * status. */
int st_write_file(const char *path, const st_write_spec *specs, size_t n,
                  st_fill_fn fill, void *ud);

/* ---- streaming writer ------------------------------------------------------------ */

/* A safetensors file being written tensor by tensor, with memory independent of tensor
 * sizes (for rewriting checkpoints whose single tensors are gigabytes).
 *
 *     st_writer_open(path, specs, n)       plan the layout (same conventions as
 *                                          st_write_file), create "<path>.tmp", write
 *                                          the 8-byte length and the padded header
 *     for i in 0..n-1:                     tensor st_writer_spec_index(w, i), in file
 *         st_writer_write / _copy_fd ...   order: append exactly its bytes, in pieces
 *     st_writer_finish(w)                  all bytes present? fsync, rename, fsync dir
 *   or st_writer_abort(w)                  remove the temporary file
 *
 * The data stream is the concatenation of the tensors in file order; appends may span
 * tensor boundaries, but never past the end of the last tensor (REAP_E_INVALID).
 * st_writer_copy_fd() copies a byte range of another file with copy_file_range(2)
 * (kernel-side, nothing passes through this process's memory; falls back to
 * pread/write through one 8 MiB buffer where the kernel refuses, and then tells the
 * kernel it no longer needs the source pages).
 *
 * Thread rules: a writer is used by one thread at a time; writers are independent.
 * Lifetime: specs are only read during st_writer_open (names are copied). */
typedef struct st_writer st_writer;

/* Returns REAP_OK, REAP_E_INVALID (duplicate names, bad shape or dtype),
 * REAP_E_IO, REAP_E_NOMEM. On failure no file is left behind and *out is NULL. */
int st_writer_open(const char *path, const st_write_spec *specs, size_t n,
                   st_writer **out);

/* Spec index of the i-th tensor in file order (0 <= i < n). */
size_t st_writer_spec_index(const st_writer *w, size_t i);

/* Data buffer bytes (sum of tensor sizes) and bytes appended so far. */
uint64_t st_writer_data_size(const st_writer *w);
uint64_t st_writer_data_pos(const st_writer *w);

/* Data offsets [begin, end) of spec `spec_index` inside the data buffer. */
void st_writer_tensor_range(const st_writer *w, size_t spec_index, uint64_t *begin,
                            uint64_t *end);

/* Append len bytes. REAP_E_INVALID past the end of the data, REAP_E_IO. */
int st_writer_write(st_writer *w, const void *buf, size_t len);

/* Append len bytes read from file descriptor fd at offset off (fd's file offset is not
 * used or changed). REAP_E_INVALID past the end of the data, REAP_E_IO (read error or
 * short source file, write error). */
int st_writer_copy_fd(st_writer *w, int fd, uint64_t off, uint64_t len);

/* Check that every data byte was appended (else REAP_E_INVALID naming the first
 * incomplete tensor), fsync, close, rename "<path>.tmp" to path and fsync the
 * directory. Frees w in every case; on failure the temporary file is removed. */
int st_writer_finish(st_writer *w);

/* Close and remove the temporary file; frees w. NULL is allowed. */
void st_writer_abort(st_writer *w);

/* Absolute file offset of the data buffer of an open file (8 + header length): tensor
 * t's bytes are at st_file_data_offset(f) + t->begin. */
uint64_t st_file_data_offset(const st_file *f);

#endif
