/* test_strbuf.c - common/strbuf.h: appends keep the text NUL-terminated and grow the
 * buffer past several doublings with every byte in place; adding nothing to an empty
 * buffer gives "" (not NULL); a size that would overflow is refused with REAP_E_NOMEM
 * and leaves the buffer as it was; free resets it.
 *
 * Usage: test_strbuf (no arguments needed).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reap_err.h"
#include "strbuf.h"
#include "test_util.h"

static void test_empty(void)
{
    reap_strbuf b = {0};
    CHECK_RC(reap_strbuf_add(&b, NULL, 0), REAP_OK);
    CHECK(b.p != NULL);
    CHECK(b.n == 0);
    CHECK(b.p && b.p[0] == '\0');
    CHECK(b.cap >= 1);
    reap_strbuf_free(&b);
    CHECK(b.p == NULL && b.n == 0 && b.cap == 0);
    reap_strbuf_free(NULL);
}

static void test_terminated(void)
{
    reap_strbuf b = {0};
    CHECK_RC(reap_strbuf_adds(&b, "abc"), REAP_OK);
    CHECK(b.n == 3);
    CHECK(b.p && strcmp(b.p, "abc") == 0);
    CHECK_RC(reap_strbuf_add(&b, "de\0f", 4), REAP_OK);   /* embedded NUL kept */
    CHECK(b.n == 7);
    CHECK(b.p && memcmp(b.p, "abcde\0f", 8) == 0);         /* and the terminator */
    size_t cap = b.cap;
    CHECK_RC(reap_strbuf_add(&b, "xyz", 0), REAP_OK);      /* n = 0: nothing changes */
    CHECK(b.n == 7 && b.cap == cap && b.p[7] == '\0');
    reap_strbuf_free(&b);
}

/* Many small appends and one large one: every byte where it belongs, terminator after
 * the last byte at every step, capacity always above the length. */
static void test_growth(void)
{
    reap_strbuf b = {0};
    size_t want = 0, grows = 0, cap = 0;
    int ok = 1;
    for (int i = 0; i < 5000; i++) {
        char c = (char)('a' + i % 26);
        if (reap_strbuf_add(&b, &c, 1) != REAP_OK) {
            ok = 0;
            break;
        }
        want++;
        if (b.cap != cap) {
            grows++;
            cap = b.cap;
        }
        if (b.n != want || b.cap < b.n + 1 || b.p[b.n] != '\0' || b.p[b.n - 1] != c)
            ok = 0;
    }
    CHECK(ok);
    CHECK_MSG(grows >= 4, "%zu reallocations for 5000 bytes", grows);
    CHECK(strlen(b.p) == 5000);
    for (size_t i = 0; i < 5000; i++)
        if (b.p[i] != (char)('a' + i % 26))
            ok = 0;
    CHECK(ok);

    size_t big = 1u << 20;
    char *blk = malloc(big);
    CHECK(blk != NULL);
    if (blk) {
        memset(blk, 'Z', big);
        CHECK_RC(reap_strbuf_add(&b, blk, big), REAP_OK);
        CHECK(b.n == 5000 + big);
        CHECK(b.cap >= b.n + 1);
        CHECK(b.p[4999] == (char)('a' + 4999 % 26));
        CHECK(b.p[5000] == 'Z' && b.p[b.n - 1] == 'Z' && b.p[b.n] == '\0');
        free(blk);
    }
    reap_strbuf_free(&b);
}

/* A length that cannot fit in size_t together with what is held and the terminator:
 * refused before anything is allocated or copied (a wrapped sum would copy SIZE_MAX
 * bytes into a small buffer). */
static void test_overflow(void)
{
    reap_strbuf b = {0};
    CHECK_RC(reap_strbuf_adds(&b, "keep"), REAP_OK);
    char *p = b.p;
    size_t cap = b.cap;
    CHECK_RC(reap_strbuf_add(&b, "x", SIZE_MAX), REAP_E_NOMEM);
    CHECK_RC(reap_strbuf_add(&b, "x", SIZE_MAX - 4), REAP_E_NOMEM);
    CHECK(b.p == p && b.n == 4 && b.cap == cap && strcmp(b.p, "keep") == 0);
    reap_strbuf_free(&b);

    reap_strbuf e = {0};
    CHECK_RC(reap_strbuf_add(&e, "x", SIZE_MAX), REAP_E_NOMEM);
    CHECK(e.p == NULL && e.n == 0 && e.cap == 0);
}

int main(void)
{
    test_empty();
    test_terminated();
    test_growth();
    test_overflow();
    TEST_MAIN_END();
}
