/* strbuf.c - a growable, NUL-terminated byte string (see strbuf.h). */
#include "strbuf.h"

#include "reap_err.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define STRBUF_MIN_CAP 256

int reap_strbuf_add(reap_strbuf *b, const char *s, size_t n)
{
    size_t need, ncap;
    char *p;

    if (n == 0 && b->p)
        return REAP_OK;
    if (n > SIZE_MAX - 1 - b->n)
        return REAP_E_NOMEM;
    need = b->n + n + 1;
    if (need > b->cap) {
        ncap = b->cap ? b->cap : STRBUF_MIN_CAP;
        while (ncap < need)
            ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2;
        p = realloc(b->p, ncap);
        if (!p)
            return REAP_E_NOMEM;
        b->p = p;
        b->cap = ncap;
    }
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return REAP_OK;
}

int reap_strbuf_adds(reap_strbuf *b, const char *s)
{
    return reap_strbuf_add(b, s, strlen(s));
}

void reap_strbuf_free(reap_strbuf *b)
{
    if (!b)
        return;
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}
