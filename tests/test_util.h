/* test_util.h - a tiny assertion helper for the C unit tests.
 *
 * CHECK(cond) reports file:line and the failed expression, counts the failure and
 * goes on; TEST_MAIN_END returns non-zero if anything failed. Asserts are never
 * compiled out (NDEBUG does not affect them).
 *
 * ts_ns(ts) is a timespec in nanoseconds. wait_clock_past(clock, t_ns, deadline_ms)
 * polls every millisecond until `clock` reads more than t_ns (for a file's ctime to be
 * left behind: the clock must pass a point, never "wait N ms and hope"); 1 when it has,
 * 0 after deadline_ms (the caller's next check then fails visibly).
 */
#ifndef REAP_TEST_UTIL_H
#define REAP_TEST_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int test_failures;
static int test_checks;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        test_checks++;                                                               \
        if (!(cond)) {                                                               \
            test_failures++;                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                            \
    } while (0)

#define CHECK_MSG(cond, ...)                                                         \
    do {                                                                             \
        test_checks++;                                                               \
        if (!(cond)) {                                                               \
            test_failures++;                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                            \
            fputc('\n', stderr);                                                     \
        }                                                                            \
    } while (0)

/* Status check: expression must return `want`; on mismatch print the error message. */
#define CHECK_RC(expr, want)                                                         \
    do {                                                                             \
        int rc_ = (expr);                                                            \
        test_checks++;                                                               \
        if (rc_ != (want)) {                                                         \
            test_failures++;                                                         \
            fprintf(stderr, "%s:%d: %s returned %d (want %d): %s\n", __FILE__,       \
                    __LINE__, #expr, rc_, (want), reap_err_msg());                   \
        }                                                                            \
    } while (0)

/* The last error message must contain `needle`. */
#define CHECK_ERRMSG(needle)                                                         \
    CHECK_MSG(strstr(reap_err_msg(), (needle)) != NULL, "message \"%s\" lacks \"%s\"", \
              reap_err_msg(), (needle))

#define TEST_MAIN_END()                                                              \
    do {                                                                             \
        if (test_failures)                                                           \
            fprintf(stderr, "%d of %d checks FAILED\n", test_failures, test_checks); \
        else                                                                         \
            printf("%d checks passed\n", test_checks);                               \
        return test_failures ? 1 : 0;                                                \
    } while (0)

static inline int64_t ts_ns(struct timespec ts)
{
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline int wait_clock_past(clockid_t clock, int64_t t_ns, int deadline_ms)
{
    for (int i = 0; i <= deadline_ms; i++) {
        struct timespec now;
        clock_gettime(clock, &now);
        if (ts_ns(now) > t_ns)
            return 1;
        usleep(1000);
    }
    return 0;
}

#endif
