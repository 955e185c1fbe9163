/* reapctl_common.c - connection options, exit codes, protobuf -> JSON and progress
 * display shared by the remote reapctl commands (reapctl_common.h). */
#include "reapctl_common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsopen.h"
#include "reap_err.h"

/* ---- connection ---------------------------------------------------------------------- */

static const struct {
    const char *flag, *env;
} g_globals[] = {
    {"scorer", "REAP_SCORER_ADDR"},     {"pruner", "REAP_PRUNER_ADDR"},
    {"token", "REAP_TOKEN"},            {"token-file", "REAP_TOKEN_FILE"},
    {"tls-ca", "REAP_TLS_CA"},          {"tls-cert", "REAP_TLS_CERT"},
    {"tls-key", "REAP_TLS_KEY"},        {"tls-server-name", "REAP_TLS_SERVER_NAME"},
    {"timeout-ms", "REAP_TIMEOUT_MS"},
};

static int g_pruner_global;

int reapctl_globals(int argc, char **argv, int *cmd, char *err, size_t errlen)
{
    int i = 1;
    while (i < argc && !strncmp(argv[i], "--", 2) && strcmp(argv[i], "--help")) {
        const char *f = argv[i] + 2, *eq = strchr(f, '='), *v;
        size_t fl = eq ? (size_t)(eq - f) : strlen(f);
        size_t k, ng = sizeof g_globals / sizeof g_globals[0];
        for (k = 0; k < ng; k++)
            if (strlen(g_globals[k].flag) == fl && !strncmp(g_globals[k].flag, f, fl))
                break;
        if (k == ng) {
            snprintf(err, errlen, "unknown global option --%.*s (give command options after "
                     "the command)", (int)fl, f);
            return -1;
        }
        if (eq) {
            v = eq + 1;
            i++;
        } else if (i + 1 < argc) {
            v = argv[i + 1];
            i += 2;
        } else {
            snprintf(err, errlen, "option --%s needs a value", g_globals[k].flag);
            return -1;
        }
        if (setenv(g_globals[k].env, v, 1)) {
            snprintf(err, errlen, "setenv %s failed", g_globals[k].env);
            return -1;
        }
        if (k == 1)
            g_pruner_global = 1;
    }
    *cmd = i;
    return 0;
}

void reapctl_conn_opts(reapctl_conn *c, int which, cli_opt *opts, int *n)
{
    memset(c, 0, sizeof *c);
    if (which & REAPCTL_SCORER)
        opts[(*n)++] = (cli_opt){"scorer", "REAP_SCORER_ADDR", CLI_STR, "127.0.0.1:50051",
                                 "scorer service address HOST:PORT", &c->scorer, 0};
    if (which & REAPCTL_PRUNER)
        opts[(*n)++] = (cli_opt){"pruner", "REAP_PRUNER_ADDR", CLI_STR, "127.0.0.1:50052",
                                 "pruner service address HOST:PORT", &c->pruner, 0};
    opts[(*n)++] = (cli_opt){"token", "REAP_TOKEN", CLI_STR, NULL, "bearer token",
                             &c->token, 0};
    opts[(*n)++] = (cli_opt){"token-file", "REAP_TOKEN_FILE", CLI_STR, NULL,
                             "file whose first line is the bearer token", &c->token_file, 0};
    opts[(*n)++] = (cli_opt){"tls-ca", "REAP_TLS_CA", CLI_STR, NULL,
                             "PEM CA: use TLS and verify the server", &c->tls_ca, 0};
    opts[(*n)++] = (cli_opt){"tls-cert", "REAP_TLS_CERT", CLI_STR, NULL,
                             "PEM client certificate (mTLS)", &c->tls_cert, 0};
    opts[(*n)++] = (cli_opt){"tls-key", "REAP_TLS_KEY", CLI_STR, NULL,
                             "PEM key of --tls-cert", &c->tls_key, 0};
    opts[(*n)++] = (cli_opt){"tls-server-name", "REAP_TLS_SERVER_NAME", CLI_STR, NULL,
                             "expected name in the server certificate", &c->tls_server_name,
                             0};
    opts[(*n)++] = (cli_opt){"timeout-ms", "REAP_TIMEOUT_MS", CLI_INT, "30000",
                             "deadline of unary calls (ms)", &c->timeout_ms, 0};
}

void reapctl_conn_note(reapctl_conn *c, int argc, char **argv)
{
    c->pruner_given = g_pruner_global;
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--pruner") || !strncmp(argv[i], "--pruner=", 9))
            c->pruner_given = 1;
}

/* The first line of a token file. */
static char *read_token(const char *path)
{
    FILE *f = NULL;
    char line[4096];
    if (reap_fopen_read(path, NULL, &f))   /* a regular file: a FIFO never blocks */
        return NULL;
    if (!fgets(line, sizeof line, f))
        line[0] = 0;
    fclose(f);
    line[strcspn(line, "\r\n")] = 0;
    return strdup(line);
}

int reapctl_connect(const char *cmd, const reapctl_conn *c, int which,
                    volatile sig_atomic_t *cancel, rpc_client **out)
{
    rpc_client_opts o;
    char *tok = NULL;
    int rc;
    memset(&o, 0, sizeof o);
    o.target = which == REAPCTL_PRUNER ? c->pruner : c->scorer;
    o.token = c->token;
    if (!o.token && c->token_file) {
        if (!(tok = read_token(c->token_file))) {
            fprintf(stderr, "reapctl %s: --token-file: cannot read it: %s\n", cmd,
                    reap_err_msg());
            return REAPCTL_EXIT_FAIL;
        }
        o.token = tok;
    }
    o.tls_ca = c->tls_ca;
    o.tls_cert = c->tls_cert;
    o.tls_key = c->tls_key;
    o.tls_server_name = c->tls_server_name;
    o.cancel = cancel;
    rc = rpc_client_open(&o, out);
    free(tok);
    if (rc) {
        fprintf(stderr, "reapctl %s: %s\n", cmd, reap_err_msg());
        return rc == REAP_E_INVALID ? REAPCTL_EXIT_USAGE : REAPCTL_EXIT_FAIL;
    }
    return 0;
}

int reapctl_call_failed(const char *cmd, const rpc_client_status *st)
{
    if (st->code == RPC_OK)
        return 0;
    fprintf(stderr, "reapctl %s: %s: %s\n", cmd, rpc_code_name(st->code), st->message);
    return REAPCTL_EXIT_SERVER + (int)st->code;
}

/* ---- protobuf -> JSON -------------------------------------------------------------- */

static json_t *scalar_json(const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return json_integer(*(const int32_t *)p);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return json_integer(*(const uint32_t *)p);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return json_integer(*(const int64_t *)p);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return json_integer((json_int_t) * (const uint64_t *)p);
    case PROTOBUF_C_TYPE_FLOAT: {
        double d = *(const float *)p;
        return isfinite(d) ? json_real(d) : json_null();
    }
    case PROTOBUF_C_TYPE_DOUBLE: {
        double d = *(const double *)p;
        return isfinite(d) ? json_real(d) : json_null();
    }
    case PROTOBUF_C_TYPE_BOOL:
        return json_boolean(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(
            f->descriptor, *(const int *)p);
        return ev ? json_string(ev->name) : json_integer(*(const int *)p);
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return json_string(s ? s : "");
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = p;
        return json_integer((json_int_t)b->len);
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *m = *(ProtobufCMessage *const *)p;
        return m ? reapctl_pb_to_json(m) : json_null();
    }
    }
    return json_null();
}

static size_t scalar_size(const ProtobufCFieldDescriptor *f)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    default:
        return 4;
    }
}

json_t *reapctl_pb_to_json(const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    json_t *o = json_object();
    if (!o)
        return NULL;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const void *p = base + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            const char *arr = *(char *const *)p;
            json_t *a = json_array();
            for (size_t k = 0; k < n && a; k++)
                json_array_append_new(a, scalar_json(f, arr + k * scalar_size(f)));
            json_object_set_new(o, f->name, a ? a : json_null());
            continue;
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t set = *(const uint32_t *)(base + f->quantifier_offset);
            if (set != f->id)
                continue;
        }
        json_object_set_new(o, f->name, scalar_json(f, p));
    }
    return o;
}

void reapctl_print_json(const ProtobufCMessage *m)
{
    json_t *j = reapctl_pb_to_json(m);
    if (j) {
        json_dumpf(j, stdout, JSON_COMPACT | JSON_REAL_PRECISION(17));
        putchar('\n');
        fflush(stdout);
        json_decref(j);
    }
}

/* ---- display ------------------------------------------------------------------------- */

reapctl_out_mode reapctl_out_mode_pick(int json)
{
    if (json)
        return REAPCTL_OUT_JSON;
    return isatty(STDOUT_FILENO) ? REAPCTL_OUT_BAR : REAPCTL_OUT_LINES;
}

void reapctl_bar(const char *label, double frac, const char *text, int done)
{
    char bar[33];
    int w = (int)(sizeof bar - 1), k;
    if (!(frac >= 0))
        frac = 0;
    if (frac > 1)
        frac = 1;
    k = (int)(frac * w + 0.5);
    for (int i = 0; i < w; i++)
        bar[i] = i < k ? '#' : '-';
    bar[w] = 0;
    printf("\r\033[K%s [%s] %3.0f%%  %s%s", label, bar, frac * 100, text, done ? "\n" : "");
    fflush(stdout);
}

void reapctl_fmt_duration(double s, char *out, size_t n)
{
    if (!(s >= 0) || !isfinite(s))
        snprintf(out, n, "?");
    else if (s < 60)
        snprintf(out, n, "%.1fs", s);
    else if (s < 3600)
        snprintf(out, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else
        snprintf(out, n, "%dh%02dm", (int)s / 3600, (int)s % 3600 / 60);
}

static volatile sig_atomic_t *g_counter;

static void on_sig(int sig)
{
    (void)sig;
    if (g_counter)
        (*g_counter)++;
}

void reapctl_on_interrupt(volatile sig_atomic_t *counter)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    g_counter = counter;
    sa.sa_handler = on_sig;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int reapctl_split(const char *s, char ***out, size_t *n)
{
    size_t cap = 2, k = 0;
    *out = NULL;
    *n = 0;
    for (const char *p = s ? s : ""; *p; p++)
        cap += *p == ',';
    char **v = calloc(cap, sizeof *v);
    if (!v)
        return -1;
    for (const char *p = s ? s : ""; *p;) {
        size_t len = strcspn(p, ",");
        if (len && !(v[k++] = strndup(p, len))) {
            reapctl_strv_free(v);
            return -1;
        }
        p += len + (p[len] == ',');
    }
    *out = v;
    *n = k;
    return 0;
}

void reapctl_strv_free(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

int reapctl_parse(const char *cmd, const char *usage, const cli_opt *opts, int n, int argc,
                  char **argv, const char **pos, int max_pos, int *n_pos)
{
    char err[512];
    int help = 0, bad;
    if (n_pos)
        bad = cli_parse_pos(opts, n, argc, argv, 2, &help, pos, max_pos, n_pos, err,
                            sizeof err);
    else
        bad = cli_parse(opts, n, argc, argv, 2, &help, err, sizeof err);
    if (bad) {
        fprintf(stderr, "reapctl %s: %s\n", cmd, err);
        cli_usage(stderr, usage, opts, n);
        return REAPCTL_EXIT_USAGE;
    }
    if (help) {
        cli_usage(stdout, usage, opts, n);
        return REAPCTL_EXIT_OK;
    }
    return -1;
}
