/* svc.c - helpers shared by the scorer and pruner services (svc.h): identity prefixes,
 * roots, the response pool, log lines, the server's start. */
#include "svc.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "catalog.h"
#include "hex.h"
#include "reap_err.h"
#include "stats_store.h"

int svc_hex_prefix(const char *text, int digits, char *out)
{
    int n = 0;
    if (!text)
        return -1;
    for (; text[n]; n++) {
        if (n >= digits || !isxdigit((unsigned char)text[n]))
            return -1;
        out[n] = (char)tolower((unsigned char)text[n]);
    }
    out[n] = 0;
    return n >= 8 ? n : -1;
}

rpc_code svc_resolve_model(reap_store *s, reap_store_snap *snap, const char *field,
                           const char *text, reap_id *out, char *err, size_t errlen)
{
    char want[65], hex[65];
    reap_id *ids = NULL;
    int n = 0, k, found = 0;
    if (!text || !*text) {
        snprintf(err, errlen, "%s: required (a model id: 64 hex digits or a unique prefix "
                 "of at least 8)", field);
        return RPC_INVALID_ARGUMENT;
    }
    if ((k = svc_hex_prefix(text, 64, want)) < 0) {
        snprintf(err, errlen, "%s: '%.80s' is not a model id (64 hex digits or a unique "
                 "prefix of at least 8)", field, text);
        return RPC_INVALID_ARGUMENT;
    }
    if (reap_store_model_list(s, snap, &ids, &n)) {
        snprintf(err, errlen, "%s: %s", field, reap_err_msg());
        return RPC_INTERNAL;
    }
    for (int i = 0; i < n; i++) {
        reap_id_hex(&ids[i], hex);
        if (!strncmp(hex, want, (size_t)k)) {
            if (found++) {
                free(ids);
                snprintf(err, errlen, "%s: prefix %s matches several models; give more "
                         "digits", field, want);
                return RPC_INVALID_ARGUMENT;
            }
            *out = ids[i];
        }
    }
    free(ids);
    if (!found) {
        snprintf(err, errlen, "%s: no model %s in the store (score it first)", field, want);
        return RPC_NOT_FOUND;
    }
    return RPC_OK;
}

rpc_code svc_resolve_calibs(reap_store *s, reap_store_snap *snap, const reap_id *model,
                            const char *field, char *const *texts, size_t n, reap_id **out,
                            char *err, size_t errlen)
{
    reap_id *have = NULL, *v = NULL;
    int n_have = 0;
    rpc_code code = RPC_OK;
    char want[65], hex[65];
    *out = NULL;
    if (n == 0)
        return RPC_OK;
    if (!(v = calloc(n, sizeof *v))) {
        snprintf(err, errlen, "%s: out of memory", field);
        return RPC_RESOURCE_EXHAUSTED;
    }
    if (reap_store_stats_calibs(s, snap, model, 0, &have, &n_have)) {
        snprintf(err, errlen, "%s: %s", field, reap_err_msg());
        code = RPC_INTERNAL;
        goto done;
    }
    for (size_t i = 0; i < n && !code; i++) {
        int k = svc_hex_prefix(texts[i], 64, want), found = 0;
        if (k < 0) {
            snprintf(err, errlen, "%s[%zu]: '%.80s' is not a calibration id (64 hex digits "
                     "or a unique prefix of at least 8)", field, i, texts[i]);
            code = RPC_INVALID_ARGUMENT;
            break;
        }
        for (int h = 0; h < n_have; h++) {
            reap_id_hex(&have[h], hex);
            if (!strncmp(hex, want, (size_t)k)) {
                found++;
                v[i] = have[h];
            }
        }
        if (found > 1) {
            snprintf(err, errlen, "%s[%zu]: prefix %s matches several calibration sets",
                     field, i, want);
            code = RPC_INVALID_ARGUMENT;
        } else if (!found) {
            snprintf(err, errlen, "%s[%zu]: the model has no statistics for calibration set "
                     "%s", field, i, want);
            code = RPC_NOT_FOUND;
        }
        for (size_t p = 0; p < i && !code; p++)
            if (!memcmp(&v[p], &v[i], sizeof v[i])) {
                snprintf(err, errlen, "%s[%zu]: calibration set %s given twice", field, i,
                         want);
                code = RPC_INVALID_ARGUMENT;
            }
    }
done:
    free(have);
    if (code)
        free(v);
    else
        *out = v;
    return code;
}

int svc_roots(rpc_roots *r, const char *what, const cli_list *dirs, char *err, size_t errlen)
{
    return rpc_roots_init(r, what, (const char *const *)dirs->v, dirs->n, err, errlen) ? -1
                                                                                        : 0;
}

/* ---- pool -------------------------------------------------------------------------- */

static void *pool_keep(svc_pool *pool, void *p)
{
    if (!p) {
        pool->failed = 1;
        return NULL;
    }
    if (pool->n == pool->cap) {
        size_t cap = pool->cap ? pool->cap * 2 : 32;
        void **v = realloc(pool->p, cap * sizeof *v);
        if (!v) {
            free(p);
            pool->failed = 1;
            return NULL;
        }
        pool->p = v;
        pool->cap = cap;
    }
    pool->p[pool->n++] = p;
    return p;
}

void *svc_alloc(svc_pool *pool, size_t size)
{
    return pool_keep(pool, calloc(1, size ? size : 1));
}

char *svc_strdup(svc_pool *pool, const char *s)
{
    return pool_keep(pool, strdup(s ? s : ""));
}

char *svc_printf(svc_pool *pool, const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return pool_keep(pool, s);
}

char *svc_hex(svc_pool *pool, const uint8_t *bin, size_t n)
{
    char *s = svc_alloc(pool, 2 * n + 1);
    if (s)
        reap_hex(bin, n, s);
    return s;
}

void svc_pool_free(svc_pool *pool)
{
    for (size_t i = 0; i < pool->n; i++)
        free(pool->p[i]);
    free(pool->p);
    memset(pool, 0, sizeof *pool);
}

int svc_respond(rpc_call *call, const svc_pool *pool, const ProtobufCMessage *msg)
{
    if (pool->failed)
        return rpc_call_error(call, RPC_RESOURCE_EXHAUSTED, "out of memory");
    return rpc_call_respond(call, msg);
}

void svc_log(const char *prog, const char *fmt, ...)
{
    char ts[32], line[2048];
    time_t t = time(NULL);
    struct tm tm;
    va_list ap;
    if (!gmtime_r(&t, &tm) || !strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(ts, sizeof ts, "-");
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: %s %s\n", prog, ts, line);
}

int svc_start(rpc_server *srv, const char *service, const rpc_method *methods, size_t n)
{
    int rc;
    for (size_t i = 0; i < n; i++)
        if ((rc = rpc_server_add_method(srv, &methods[i])))
            return rc;
    if ((rc = rpc_server_install_signals(srv)) || (rc = rpc_server_start(srv)))
        return rc;
    rpc_health_set(srv, "", RPC_HEALTH_SERVING);
    rpc_health_set(srv, service, RPC_HEALTH_SERVING);
    printf("port %d\n", rpc_server_port(srv));
    if (rpc_server_health_port(srv))
        printf("health-port %d\n", rpc_server_health_port(srv));
    fflush(stdout);
    return REAP_OK;
}

void svc_log_auth(const char *prog, const rpc_server *srv)
{
    if (rpc_server_auth_required(srv))
        svc_log(prog, "authentication: bearer token (health exempt)");
    else
        svc_log(prog, "authentication: none (no --token or --token-file): every client that "
                "reaches the port is served");
}
