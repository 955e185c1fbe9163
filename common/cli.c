/* cli.c - table-driven option parsing (see cli.h). */
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int set_value(const cli_opt *o, const char *v, const char *source, char *err,
                     size_t errlen)
{
    char *end;
    switch (o->kind) {
    case CLI_STR:
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
    }
    return -1;
}

int cli_parse(const cli_opt *opts, int n, int argc, char **argv, int first, int *help,
              char *err, size_t errlen)
{
    int *seen = calloc((size_t)n + 1, sizeof *seen);
    int rc = -1;
    if (!seen) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    *help = 0;
    for (int i = 0; i < n; i++) {
        const cli_opt *o = &opts[i];
        switch (o->kind) {
        case CLI_STR: *(const char **)o->dst = NULL; break;
        case CLI_INT: *(long *)o->dst = 0; break;
        case CLI_DOUBLE: *(double *)o->dst = 0; break;
        case CLI_FLAG: *(int *)o->dst = 0; break;
        }
        if (o->def) {
            if (set_value(o, o->def, "default", err, errlen))
                goto done;
            seen[i] = 1;
        }
        const char *ev = o->env ? getenv(o->env) : NULL;
        if (ev && *ev) {
            if (set_value(o, ev, o->env, err, errlen))
                goto done;
            seen[i] = 1;
        }
    }
    for (int a = first; a < argc; a++) {
        const char *arg = argv[a];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            *help = 1;
            rc = 0;
            goto done;
        }
        if (strncmp(arg, "--", 2)) {
            snprintf(err, errlen, "unexpected argument '%s'", arg);
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
            goto done;
        }
        if (set_value(o, v, "command line", err, errlen))
            goto done;
        seen[found] = 1;
    }
    for (int i = 0; i < n; i++)
        if (opts[i].required && !seen[i]) {
            snprintf(err, errlen, "missing required option --%s%s%s", opts[i].flag,
                     opts[i].env ? " (or environment variable " : "",
                     opts[i].env ? opts[i].env : "");
            if (opts[i].env)
                strncat(err, ")", errlen - strlen(err) - 1);
            goto done;
        }
    rc = 0;
done:
    free(seen);
    return rc;
}

void cli_usage(FILE *f, const char *usage, const cli_opt *opts, int n)
{
    fprintf(f, "%s\n\noptions:\n", usage);
    for (int i = 0; i < n; i++) {
        const cli_opt *o = &opts[i];
        char flag[64];
        snprintf(flag, sizeof flag, "--%s%s", o->flag,
                 o->kind == CLI_FLAG ? "" : o->kind == CLI_STR ? " STR" : " N");
        fprintf(f, "  %-24s %s", flag, o->help);
        if (o->def)
            fprintf(f, " (default %s)", o->def);
        if (o->required)
            fprintf(f, " [required]");
        if (o->env)
            fprintf(f, " [env %s]", o->env);
        fputc('\n', f);
    }
}
