/* cli.h - declarative command-line options: one table (flag, environment variable,
 * default, help) drives parsing, --help and validation.
 *
 * Precedence: default < environment variable < command-line flag. Flags are written
 * `--name VALUE` or `--name=VALUE`; CLI_FLAG options take no value (environment: 1/0,
 * true/false, yes/no).
 */
#ifndef REAP_CLI_H
#define REAP_CLI_H

#include <stdio.h>

typedef enum cli_kind { CLI_STR, CLI_INT, CLI_DOUBLE, CLI_FLAG } cli_kind;

typedef struct cli_opt {
    const char *flag;   /* without the leading "--" */
    const char *env;    /* environment variable or NULL */
    cli_kind kind;
    const char *def;    /* default as text, or NULL (unset: "" / 0) */
    const char *help;
    void *dst;          /* const char ** | long * | double * | int * */
    int required;       /* 1: must be set by default, env or flag */
} cli_opt;

/* Parse argv[first..argc) into the destinations. Returns 0, or -1 with a message in err
 * (unknown flag, missing or malformed value, missing required option). Sets *help to 1
 * (and returns 0) when --help/-h is given. Never exits. */
int cli_parse(const cli_opt *opts, int n, int argc, char **argv, int first, int *help,
              char *err, size_t errlen);

/* Print "usage" then one line per option: flag, environment variable, default, help. */
void cli_usage(FILE *f, const char *usage, const cli_opt *opts, int n);

#endif
