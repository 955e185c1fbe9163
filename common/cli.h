/* cli.h - declarative command-line options: one table (flag, environment variable,
 * default, help) drives parsing, --help and validation.
 *
 * Precedence: default < .env file < environment variable < command-line flag. Flags are
 * written `--name VALUE` or `--name=VALUE`; CLI_FLAG options take no value
 * (environment: 1/0, true/false, yes/no).
 *
 * .env files: a table may contain one CLI_ENVFILE option (e.g. `--env-file`, env
 * REAP_ENV_FILE, default ".env"). cli_parse then reads that file first and puts each
 * KEY=VALUE it holds into the process environment unless the variable is already set
 * (the real environment wins), so every option with an environment variable can be set
 * there. A missing file is an error only when it was named by the flag or its
 * variable, not when it is the default. Format (cli_dotenv_parse): one KEY=VALUE per
 * line; blank lines and lines starting with '#' ignored; optional `export ` prefix;
 * spaces around KEY and '=' ignored; VALUE unquoted (trailing spaces and a ` #comment`
 * removed), 'single-quoted' (literal) or "double-quoted" (escapes \n \t \r \\ \" \$);
 * no variable expansion; KEY matches [A-Za-z_][A-Za-z0-9_]*.
 *
 * Thread rules: cli_parse with a CLI_ENVFILE option calls setenv(3): call it from
 * main() before other threads start. Nothing here exits.
 */
#ifndef REAP_CLI_H
#define REAP_CLI_H

#include <stddef.h>
#include <stdio.h>

typedef enum cli_kind {
    CLI_STR,     /* dst: const char ** (points into argv or the environment) */
    CLI_INT,     /* dst: long * */
    CLI_DOUBLE,  /* dst: double * */
    CLI_FLAG,    /* dst: int * */
    CLI_LIST,    /* dst: cli_list *; the flag may repeat (each adds one entry); the
                    environment variable / default hold a ':'-separated list, used only
                    when the flag is absent. Free with cli_free. */
    CLI_ENVFILE  /* dst: const char ** (the .env path used, or NULL); see above */
} cli_kind;

typedef struct cli_opt {
    const char *flag;   /* without the leading "--" */
    const char *env;    /* environment variable or NULL */
    cli_kind kind;
    const char *def;    /* default as text, or NULL (unset: "" / 0) */
    const char *help;
    void *dst;          /* see cli_kind */
    int required;       /* 1: must be set by default, env or flag; CLI_NONEMPTY:
                           optional, but a value given empty (`--token ""`, REAP_TOKEN=""
                           in the environment or `REAP_TOKEN=` in the .env file) is an
                           error naming where it came from, instead of counting as
                           "not given" */
} cli_opt;

#define CLI_NONEMPTY 2

/* A CLI_LIST destination: n malloc'd strings. */
typedef struct cli_list {
    char **v;
    int n;
} cli_list;

/* Parse argv[first..argc) into the destinations. Returns 0, or -1 with a message in err
 * (unknown flag, missing or malformed value, missing required option, unreadable or
 * malformed .env file with file:line). Sets *help to 1 (and returns 0) when --help/-h is
 * given. Never exits. CLI_LIST destinations are allocated even on failure: release them
 * with cli_free. */
int cli_parse(const cli_opt *opts, int n, int argc, char **argv, int first, int *help,
              char *err, size_t errlen);

/* cli_parse that also takes up to max_pos positional arguments (anything not starting
 * with '-', or a lone "-"), anywhere among the options: `cmd DIR --json` and
 * `cmd --json DIR` are the same. A value that follows an option taking one is that
 * option's, never positional. After "--" every argument is positional. pos[0..*n_pos)
 * receives them in order (pointers into argv). More than max_pos, or an argument that
 * starts with '-' and is not an option, is an error ("unexpected argument"). */
int cli_parse_pos(const cli_opt *opts, int n, int argc, char **argv, int first, int *help,
                  const char **pos, int max_pos, int *n_pos, char *err, size_t errlen);

/* Free what cli_parse allocated (CLI_LIST contents); the table's destinations are left
 * empty. Safe to call twice. */
void cli_free(const cli_opt *opts, int n);

/* Print "usage" then one line per option: flag, environment variable, default, help. */
void cli_usage(FILE *f, const char *usage, const cli_opt *opts, int n);

/* The shuffle seed of the commands that take --shuffle and --seed (a CLI_STR option,
 * NULL when not given): *seed = its value, an integer >= 0, or 0 when not given.
 * Returns 0, or -1 with the problem in err ("--seed 'x' is not an integer >= 0",
 * "--seed only applies with --shuffle"). */
int cli_shuffle_seed(const char *text, int shuffle, long *seed, char *err, size_t errlen);

/* Parse .env text (NUL-terminated; `name` is used in messages). fn(key, value, ud) is
 * called for each assignment in file order (strings valid during the call only); a
 * non-zero return from fn stops parsing and is returned. Returns 0, or -1 with
 * "name:LINE: problem" in err. */
typedef int (*cli_dotenv_fn)(const char *key, const char *value, void *ud);
int cli_dotenv_parse(const char *text, const char *name, cli_dotenv_fn fn, void *ud,
                     char *err, size_t errlen);

/* Read the .env file `path` and setenv each assignment; with overwrite 0 a variable
 * already in the environment is kept. Returns 0; 1 if the file does not exist (nothing
 * done); -1 with a message in err (unreadable, malformed, setenv failure). */
int cli_dotenv_load(const char *path, int overwrite, char *err, size_t errlen);

#endif
