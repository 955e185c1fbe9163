/* strbuf.h - a growable byte string: append, always NUL-terminated, one owner of the
 * growth rule (capacity doubles from 256 bytes; sizes checked for overflow).
 *
 * Usage: `reap_strbuf b = {0};` then reap_strbuf_add / reap_strbuf_adds; b.p holds b.n
 * bytes followed by a '\0' (not counted in b.n) once anything, even "" with n = 0, has
 * been added; release with reap_strbuf_free, or take b.p and free it yourself.
 * The bytes may contain '\0' (b.n, not strlen, is the length).
 *
 * Thread rules: a buffer belongs to one thread at a time; nothing is shared between
 * buffers.
 */
#ifndef REAP_STRBUF_H
#define REAP_STRBUF_H

#include <stddef.h>

typedef struct reap_strbuf {
    char *p;    /* [cap] malloc'd; NULL until the first add */
    size_t n;   /* bytes held, not counting the terminating '\0' */
    size_t cap; /* bytes allocated at p */
} reap_strbuf;

/* Append the n bytes at s (s may be NULL when n is 0) and keep the text NUL-terminated.
 * Adding nothing to an empty buffer allocates it, so that b->p is "" rather than NULL.
 * Returns REAP_OK, or REAP_E_NOMEM when memory runs out or b->n + n + 1 would overflow
 * size_t; it sets no error message (the caller says what it was building), and on
 * failure the buffer is unchanged. */
int reap_strbuf_add(reap_strbuf *b, const char *s, size_t n);

/* reap_strbuf_add(b, s, strlen(s)). */
int reap_strbuf_adds(reap_strbuf *b, const char *s);

/* Free the bytes and reset *b to empty ({0}). b may be NULL. */
void reap_strbuf_free(reap_strbuf *b);

#endif
