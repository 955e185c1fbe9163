/* cli.c - table-driven option parsing and .env files (see cli.h). */
#include "cli.h"

#include "fsopen.h"
#include "reap_err.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int list_add(cli_list *l, const char *v, size_t len)
{
    char **nv = realloc(l->v, (size_t)(l->n + 1) * sizeof *nv);
    if (!nv)
        return -1;
    l->v = nv;
    if (!(l->v[l->n] = strndup(v, len)))
        return -1;
    l->n++;
    return 0;
}

static void list_clear(cli_list *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static int set_value(const cli_opt *o, const char *v, const char *source, char *err,
                     size_t errlen)
{
    char *end;
    switch (o->kind) {
    case CLI_STR:
    case CLI_ENVFILE:
        *(const char **)o->dst = v;
        return 0;
    case CLI_INT: {
        errno = 0;
        long x = strtol(v, &end, 10);
        if (errno || end == v || *end) {
            snprintf(err, errlen, "%s: --%s expects an integer, got '%s'", source, o->flag, v);
            return -1;
        }
        *(long *)o->dst = x;
        return 0;
    }
    case CLI_DOUBLE: {
        errno = 0;
        double x = strtod(v, &end);
        if (errno || end == v || *end) {
            snprintf(err, errlen, "%s: --%s expects a number, got '%s'", source, o->flag, v);
            return -1;
        }
        *(double *)o->dst = x;
        return 0;
    }
    case CLI_FLAG:
        if (!strcasecmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes"))
            *(int *)o->dst = 1;
        else if (!strcasecmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no") || !*v)
            *(int *)o->dst = 0;
        else {
            snprintf(err, errlen, "%s: --%s expects true or false, got '%s'", source, o->flag, v);
            return -1;
        }
        return 0;
    case CLI_LIST: {
        /* From a default or the environment: a ':'-separated list (empty items skipped). */
        cli_list *l = o->dst;
        list_clear(l);
        for (const char *p = v; *p;) {
            size_t len = strcspn(p, ":");
            if (len && list_add(l, p, len)) {
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            p += len;
            if (*p == ':')
                p++;
        }
        return 0;
    }
    }
    return -1;
}

/* The value a CLI_ENVFILE option gets and whether it was named explicitly. */
static const char *envfile_path(const cli_opt *o, int argc, char **argv, int first,
                                int *explicit_)
{
    const char *v = NULL;
    size_t fl = strlen(o->flag);
    *explicit_ = 0;
    for (int a = first; a < argc; a++) {
        const char *arg = argv[a];
        if (strncmp(arg, "--", 2) || strncmp(arg + 2, o->flag, fl))
            continue;
        if (arg[2 + fl] == '=') {
            v = arg + 3 + fl;
            *explicit_ = 1;
        } else if (!arg[2 + fl] && a + 1 < argc) {
            v = argv[++a];
            *explicit_ = 1;
        }
    }
    if (!v && o->env && getenv(o->env) && *getenv(o->env)) {
        v = getenv(o->env);
        *explicit_ = 1;
    }
    if (!v)
        v = o->def;
    return v && *v ? v : NULL;
}

static int parse(const cli_opt *opts, int n, int argc, char **argv, int first, int *help,
                 const char **pos, int max_pos, int *n_pos, char *err, size_t errlen);

int cli_parse(const cli_opt *opts, int n, int argc, char **argv, int first, int *help,
              char *err, size_t errlen)
{
    return parse(opts, n, argc, argv, first, help, NULL, 0, NULL, err, errlen);
}

int cli_parse_pos(const cli_opt *opts, int n, int argc, char **argv, int first, int *help,
                  const char **pos, int max_pos, int *n_pos, char *err, size_t errlen)
{
    int dummy;
    return parse(opts, n, argc, argv, first, help, pos, max_pos, n_pos ? n_pos : &dummy, err,
                 errlen);
}

/* 1 when argv[first..argc) gives option o as a flag (its value then wins over an
 * empty environment variable). */
static int flag_given(const cli_opt *o, int argc, char **argv, int first)
{
    size_t fl = strlen(o->flag);
    for (int a = first; a < argc; a++) {
        if (!strcmp(argv[a], "--"))
            break;
        if (!strncmp(argv[a], "--", 2) && !strncmp(argv[a] + 2, o->flag, fl) &&
            (argv[a][2 + fl] == '\0' || argv[a][2 + fl] == '='))
            return 1;
    }
    return 0;
}

static int parse(const cli_opt *opts, int n, int argc, char **argv, int first, int *help,
                 const char **pos, int max_pos, int *n_pos, char *err, size_t errlen)
{
    int *seen = calloc((size_t)n + 1, sizeof *seen);
    /* Options whose variable was in the environment before the .env file was read (so
     * that an empty value can be traced to the environment or to the file). */
    int *in_env = calloc((size_t)n + 1, sizeof *in_env);
    const char *envfile = NULL;
    int rc = -1;
    if (!seen || !in_env) {
        snprintf(err, errlen, "out of memory");
        free(seen);
        free(in_env);
        return -1;
    }
    for (int i = 0; i < n; i++)
        in_env[i] = opts[i].env && getenv(opts[i].env) != NULL;
    *help = 0;
    if (n_pos)
        *n_pos = 0;
    /* .env first, so that its values act as environment variables below. */
    for (int i = 0; i < n; i++) {
        if (opts[i].kind != CLI_ENVFILE)
            continue;
        int explicit_;
        const char *path = envfile_path(&opts[i], argc, argv, first, &explicit_);
        if (!path)
            continue;
        int lr = cli_dotenv_load(path, 0, err, errlen);
        if (lr < 0)
            goto done;
        if (lr == 1 && explicit_) {
            snprintf(err, errlen, "--%s: cannot open '%s'", opts[i].flag, path);
            goto done;
        }
        if (lr == 0)
            envfile = path;
    }
    for (int i = 0; i < n; i++) {
        const cli_opt *o = &opts[i];
        switch (o->kind) {
        case CLI_STR:
        case CLI_ENVFILE: *(const char **)o->dst = NULL; break;
        case CLI_INT: *(long *)o->dst = 0; break;
        case CLI_DOUBLE: *(double *)o->dst = 0; break;
        case CLI_FLAG: *(int *)o->dst = 0; break;
        case CLI_LIST: {
            cli_list *l = o->dst;
            l->v = NULL;
            l->n = 0;
            break;
        }
        }
    }
    for (int i = 0; i < n; i++) {
        const cli_opt *o = &opts[i];
        if (o->def) {
            if (set_value(o, o->def, "default", err, errlen))
                goto done;
            seen[i] = 1;
        }
        const char *ev = o->env ? getenv(o->env) : NULL;
        if (ev && !*ev && o->required == CLI_NONEMPTY && !flag_given(o, argc, argv, first)) {
            if (in_env[i] || !envfile)
                snprintf(err, errlen, "environment variable %s is set but empty (--%s "
                         "needs a value; unset the variable to leave it out)", o->env,
                         o->flag);
            else
                snprintf(err, errlen, "%s is empty in the .env file '%s' (--%s needs a "
                         "value; remove the line to leave it out)", o->env, envfile,
                         o->flag);
            goto done;
        }
        if (ev && *ev) {
            if (set_value(o, ev, o->env, err, errlen))
                goto done;
            seen[i] = 1;
        }
    }
    int *list_from_flag = calloc((size_t)n + 1, sizeof *list_from_flag);
    if (!list_from_flag) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    for (int a = first; a < argc; a++) {
        const char *arg = argv[a];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            *help = 1;
            rc = 0;
            free(list_from_flag);
            goto done;
        }
        if (n_pos && !strcmp(arg, "--")) {   /* the rest is positional */
            while (++a < argc) {
                if (*n_pos >= max_pos) {
                    snprintf(err, errlen, "unexpected argument '%s'", argv[a]);
                    free(list_from_flag);
                    goto done;
                }
                pos[(*n_pos)++] = argv[a];
            }
            break;
        }
        if (strncmp(arg, "--", 2)) {
            if (n_pos && *n_pos < max_pos && (arg[0] != '-' || !arg[1])) {
                pos[(*n_pos)++] = arg;
                continue;
            }
            snprintf(err, errlen, "unexpected argument '%s'", arg);
            free(list_from_flag);
            goto done;
        }
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        int found = -1;
        for (int i = 0; i < n; i++)
            if (strlen(opts[i].flag) == len && !strncmp(opts[i].flag, name, len))
                found = i;
        if (found < 0) {
            snprintf(err, errlen, "unknown option '%.*s' (see --help)", (int)len + 2, arg);
            free(list_from_flag);
            goto done;
        }
        const cli_opt *o = &opts[found];
        const char *v;
        if (o->kind == CLI_FLAG)
            v = eq ? eq + 1 : "1";
        else if (eq)
            v = eq + 1;
        else if (a + 1 < argc)
            v = argv[++a];
        else {
            snprintf(err, errlen, "option --%s needs a value", o->flag);
            free(list_from_flag);
            goto done;
        }
        if (o->kind == CLI_LIST) {
            /* Flags replace the environment / default list, then accumulate. */
            cli_list *l = o->dst;
            if (!list_from_flag[found])
                list_clear(l);
            list_from_flag[found] = 1;
            if (!*v) {
                snprintf(err, errlen, "option --%s needs a non-empty value", o->flag);
                free(list_from_flag);
                goto done;
            }
            if (list_add(l, v, strlen(v))) {
                snprintf(err, errlen, "out of memory");
                free(list_from_flag);
                goto done;
            }
        } else if (!*v && o->required == CLI_NONEMPTY) {
            snprintf(err, errlen, "option --%s was given an empty value (leave the option "
                     "out instead)", o->flag);
            free(list_from_flag);
            goto done;
        } else if (set_value(o, v, "command line", err, errlen)) {
            free(list_from_flag);
            goto done;
        }
        seen[found] = 1;
    }
    free(list_from_flag);
    for (int i = 0; i < n; i++) {
        int empty_list = opts[i].kind == CLI_LIST && ((cli_list *)opts[i].dst)->n == 0;
        if (opts[i].required == 1 && (!seen[i] || empty_list)) {
            snprintf(err, errlen, "missing required option --%s%s%s", opts[i].flag,
                     opts[i].env ? " (or environment variable " : "",
                     opts[i].env ? opts[i].env : "");
            if (opts[i].env)
                strncat(err, ")", errlen - strlen(err) - 1);
            goto done;
        }
    }
    rc = 0;
done:
    free(seen);
    free(in_env);
    return rc;
}

void cli_free(const cli_opt *opts, int n)
{
    for (int i = 0; i < n; i++)
        if (opts[i].kind == CLI_LIST)
            list_clear(opts[i].dst);
}

void cli_usage(FILE *f, const char *usage, const cli_opt *opts, int n)
{
    fprintf(f, "%s\n\noptions:\n", usage);
    for (int i = 0; i < n; i++) {
        const cli_opt *o = &opts[i];
        char flag[64];
        const char *arg = o->kind == CLI_FLAG ? ""
                          : o->kind == CLI_STR || o->kind == CLI_LIST ? " STR"
                          : o->kind == CLI_ENVFILE ? " FILE"
                          : " N";
        snprintf(flag, sizeof flag, "--%s%s", o->flag, arg);
        fprintf(f, "  %-24s %s", flag, o->help);
        if (o->kind == CLI_LIST)
            fprintf(f, " (repeatable)");
        if (o->def)
            fprintf(f, " (default %s)", o->def);
        if (o->required == 1)
            fprintf(f, " [required]");
        if (o->env)
            fprintf(f, " [env %s%s]", o->env, o->kind == CLI_LIST ? ", ':'-separated" : "");
        fputc('\n', f);
    }
}

/* ---- .env files -------------------------------------------------------------------- */

int cli_dotenv_parse(const char *text, const char *name, cli_dotenv_fn fn, void *ud,
                     char *err, size_t errlen)
{
    const char *p = text;
    int line = 0;
    size_t cap = 256;
    char *val = malloc(cap);
    char key[256];
    int rc = -1;

    if (!val) {
        snprintf(err, errlen, "%s: out of memory", name);
        return -1;
    }
    while (*p) {
        const char *eol = strchr(p, '\n');
        const char *end = eol ? eol : p + strlen(p);
        const char *q = p;
        line++;
        if (end > p && end[-1] == '\r')
            end--;
        while (q < end && (*q == ' ' || *q == '\t'))
            q++;
        if (q == end || *q == '#')
            goto next;
        if (end - q > 7 && !strncmp(q, "export", 6) && (q[6] == ' ' || q[6] == '\t')) {
            q += 6;
            while (q < end && (*q == ' ' || *q == '\t'))
                q++;
        }
        /* KEY */
        size_t kl = 0;
        if (!(isalpha((unsigned char)*q) || *q == '_')) {
            snprintf(err, errlen, "%s:%d: expected a variable name", name, line);
            goto out;
        }
        while (q < end && (isalnum((unsigned char)*q) || *q == '_')) {
            if (kl + 1 >= sizeof key) {
                snprintf(err, errlen, "%s:%d: variable name too long", name, line);
                goto out;
            }
            key[kl++] = *q++;
        }
        key[kl] = '\0';
        while (q < end && (*q == ' ' || *q == '\t'))
            q++;
        if (q == end || *q != '=') {
            snprintf(err, errlen, "%s:%d: expected '=' after %s", name, line, key);
            goto out;
        }
        q++;
        while (q < end && (*q == ' ' || *q == '\t'))
            q++;
        /* VALUE */
        if ((size_t)(end - q) + 1 > cap) {
            cap = (size_t)(end - q) + 1;
            char *nv = realloc(val, cap);
            if (!nv) {
                snprintf(err, errlen, "%s: out of memory", name);
                goto out;
            }
            val = nv;
        }
        size_t vl = 0;
        if (*q == '"' || *q == '\'') {
            char quote = *q++;
            int closed = 0;
            while (q < end) {
                char ch = *q++;
                if (ch == quote) {
                    closed = 1;
                    break;
                }
                if (quote == '"' && ch == '\\' && q < end) {
                    char e = *q++;
                    switch (e) {
                    case 'n': ch = '\n'; break;
                    case 't': ch = '\t'; break;
                    case 'r': ch = '\r'; break;
                    case '\\': case '"': case '$': ch = e; break;
                    default: val[vl++] = '\\'; ch = e; break;
                    }
                }
                val[vl++] = ch;
            }
            if (!closed) {
                snprintf(err, errlen, "%s:%d: unterminated quoted value of %s", name, line,
                         key);
                goto out;
            }
            while (q < end && (*q == ' ' || *q == '\t'))
                q++;
            if (q < end && *q != '#') {
                snprintf(err, errlen, "%s:%d: unexpected text after the quoted value of %s",
                         name, line, key);
                goto out;
            }
        } else {
            while (q < end) {
                if (*q == '#' && vl > 0 && (val[vl - 1] == ' ' || val[vl - 1] == '\t'))
                    break;
                val[vl++] = *q++;
            }
            while (vl > 0 && (val[vl - 1] == ' ' || val[vl - 1] == '\t'))
                vl--;
        }
        val[vl] = '\0';
        if (strlen(val) != vl) {
            snprintf(err, errlen, "%s:%d: NUL byte in the value of %s", name, line, key);
            goto out;
        }
        if ((rc = fn(key, val, ud)) != 0)
            goto out_rc;
    next:
        if (!eol)
            break;
        p = eol + 1;
    }
    rc = 0;
    goto out_rc;
out:
    rc = -1;
out_rc:
    free(val);
    return rc;
}

typedef struct dotenv_load_ctx {
    int overwrite;
    char *err;
    size_t errlen;
    const char *path;
} dotenv_load_ctx;

static int dotenv_setenv(const char *key, const char *value, void *ud)
{
    dotenv_load_ctx *c = ud;
    if (!c->overwrite && getenv(key))
        return 0;
    if (setenv(key, value, 1)) {
        snprintf(c->err, c->errlen, "%s: setenv %s: %s", c->path, key, strerror(errno));
        return -1;
    }
    return 0;
}

int cli_dotenv_load(const char *path, int overwrite, char *err, size_t errlen)
{
    FILE *f = NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    int rc = reap_fopen_read(path, NULL, &f);   /* a FIFO is refused, never waited on */
    if (rc) {
        if (rc == REAP_E_NOTFOUND)
            return 1;
        snprintf(err, errlen, "%s", reap_err_msg());
        return -1;
    }
    rc = -1;
    for (;;) {
        if (n + 4097 > cap) {
            if (cap >= (1u << 20)) {
                snprintf(err, errlen, "%s: larger than 1 MiB", path);
                goto out;
            }
            cap = cap ? cap * 2 : 4096 * 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                snprintf(err, errlen, "%s: out of memory", path);
                goto out;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (!got)
            break;
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        goto out;
    }
    buf[n] = '\0';
    if (strlen(buf) != n) {
        snprintf(err, errlen, "%s: contains a NUL byte", path);
        goto out;
    }
    dotenv_load_ctx ctx = {overwrite, err, errlen, path};
    rc = cli_dotenv_parse(buf, path, dotenv_setenv, &ctx, err, errlen) ? -1 : 0;
out:
    fclose(f);
    free(buf);
    return rc;
}

int cli_shuffle_seed(const char *text, int shuffle, long *seed, char *err, size_t errlen)
{
    char *end;
    *seed = 0;
    if (!text)
        return 0;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (!*text || *end || errno || v < 0) {
        snprintf(err, errlen, "--seed '%s' is not an integer >= 0", text);
        return -1;
    }
    if (!shuffle) {
        snprintf(err, errlen, "--seed only applies with --shuffle");
        return -1;
    }
    *seed = v;
    return 0;
}
