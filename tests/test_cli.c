/* test_cli.c - unit tests for common/cli.c: .env parsing and loading, precedence
 * (default < .env < environment < flag), CLI_LIST options, that the existing option
 * kinds behave as before, and positional arguments anywhere among the options
 * (cli_parse_pos).
 *
 * Usage: test_cli <scratch-dir>.
 */
#include "cli.h"
#include "test_fixtures.h"
#include "test_util.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>

/* Collects parsed assignments as "K=V;" */
static int collect(const char *k, const char *v, void *ud)
{
    char *out = ud;
    size_t n = strlen(out);
    snprintf(out + n, 4096 - n, "%s=%s;", k, v);
    return 0;
}

static int stop_first(const char *k, const char *v, void *ud)
{
    (void)k;
    (void)v;
    ++*(int *)ud;
    return 5;
}

static void parse_ok(const char *text, const char *want, int line)
{
    char out[4096] = "", err[256] = "";
    int rc = cli_dotenv_parse(text, ".env", collect, out, err, sizeof err);
    test_checks++;
    if (rc || strcmp(out, want)) {
        test_failures++;
        fprintf(stderr, "line %d: parse gave rc %d '%s' (%s), want '%s'\n", line, rc, out, err,
                want);
    }
}
#define PARSE_OK(text, want) parse_ok(text, want, __LINE__)

static void parse_bad(const char *text, const char *needle, int line)
{
    char out[4096] = "", err[256] = "";
    int rc = cli_dotenv_parse(text, "x.env", collect, out, err, sizeof err);
    test_checks++;
    if (rc != -1 || !strstr(err, needle)) {
        test_failures++;
        fprintf(stderr, "line %d: want failure with '%s', got rc %d '%s'\n", line, needle, rc,
                err);
    }
}
#define PARSE_BAD(text, needle) parse_bad(text, needle, __LINE__)

int main(int argc, char **argv)
{
    char err[512];
    int help;
    if (argc < 2) {
        fprintf(stderr, "usage: test_cli SCRATCH\n");
        return 2;
    }
    scratch = argv[1];
    make_dirs(scratch);

    /* ---- .env syntax ---- */
    PARSE_OK("", "");
    PARSE_OK("A=1\nB=two\n", "A=1;B=two;");
    PARSE_OK("A=1", "A=1;");                                 /* no final newline */
    PARSE_OK("# comment\n\n   \nA=1\r\n", "A=1;");           /* comments, blank, CRLF */
    PARSE_OK("export A=1\n", "A=1;");
    PARSE_OK("  A  =  spaced value  \n", "A=spaced value;");
    PARSE_OK("A=x # trailing comment\n", "A=x;");
    PARSE_OK("A=x#not-a-comment\n", "A=x#not-a-comment;");
    PARSE_OK("A=\n", "A=;");
    PARSE_OK("A='single $HOME \\n # kept'\n", "A=single $HOME \\n # kept;");
    PARSE_OK("A=\"dq \\\"q\\\" \\\\ \\$ \\n\" # c\n", "A=dq \"q\" \\ $ \n;");
    PARSE_OK("A=\"unknown \\q escape\"\n", "A=unknown \\q escape;");
    PARSE_OK("A=$OTHER\n", "A=$OTHER;");                     /* no expansion */
    PARSE_OK("_A9=1\nexportB=2\n", "_A9=1;exportB=2;");
    PARSE_OK("A=a=b=c\n", "A=a=b=c;");
    PARSE_BAD("A=1\n9X=2\n", "x.env:2: expected a variable name");
    PARSE_BAD("A 1\n", "x.env:1: expected '='");
    PARSE_BAD("A\n", "x.env:1: expected '='");
    PARSE_BAD("A=\"open\n", "x.env:1: unterminated");
    PARSE_BAD("\nA='open\n", "x.env:2: unterminated");
    PARSE_BAD("A=\"x\" junk\n", "x.env:1: unexpected text");
    PARSE_BAD("-A=1\n", "x.env:1");

    /* A callback error stops parsing and is returned. */
    {
        int calls = 0;
        CHECK(cli_dotenv_parse("A=1\nB=2\n", "e", stop_first, &calls, err, sizeof err) == 5);
        CHECK(calls == 1);
    }

    /* ---- loading ---- */
    unsetenv("RT_A");
    unsetenv("RT_B");
    setenv("RT_KEEP", "env", 1);
    const char *envp = write_scratch("t.env", "RT_A=from-file\nRT_KEEP=file\n");
    CHECK(cli_dotenv_load(envp, 0, err, sizeof err) == 0);
    CHECK(getenv("RT_A") && !strcmp(getenv("RT_A"), "from-file"));
    CHECK(!strcmp(getenv("RT_KEEP"), "env"));               /* the environment wins */
    CHECK(cli_dotenv_load(envp, 1, err, sizeof err) == 0);
    CHECK(!strcmp(getenv("RT_KEEP"), "file"));              /* unless overwrite */
    {
        char missing[1200];
        snprintf(missing, sizeof missing, "%s/none.env", scratch);
        CHECK(cli_dotenv_load(missing, 0, err, sizeof err) == 1);
    }
    const char *badp = write_scratch("bad.env", "OK=1\nnot valid\n");
    CHECK(cli_dotenv_load(badp, 0, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "bad.env:2:") != NULL, "%s", err);

    /* ---- cli_parse with an env-file option: default < .env < environment < flag ---- */
    {
        const char *name = NULL, *envfile = NULL;
        long n = 0;
        double d = 0;
        int flag = 0;
        cli_list roots = {0};
        cli_opt opts[] = {
            {"name", "RT_NAME", CLI_STR, "dflt", "a string", &name, 0},
            {"n", "RT_N", CLI_INT, "1", "an int", &n, 0},
            {"d", "RT_D", CLI_DOUBLE, "0.5", "a double", &d, 0},
            {"flag", "RT_FLAG", CLI_FLAG, NULL, "a flag", &flag, 0},
            {"root", "RT_ROOTS", CLI_LIST, NULL, "roots", &roots, 0},
            {"env-file", "RT_ENV_FILE", CLI_ENVFILE, NULL, "settings file", &envfile, 0},
        };
        int no = (int)(sizeof opts / sizeof *opts);
        unsetenv("RT_NAME");
        unsetenv("RT_N");
        unsetenv("RT_D");
        unsetenv("RT_FLAG");
        unsetenv("RT_ROOTS");
        unsetenv("RT_ENV_FILE");
        const char *ef = write_scratch("svc.env",
                                    "RT_NAME=from-env-file\nRT_N=7\nRT_FLAG=yes\n"
                                    "RT_ROOTS=/a:/b::/c\n");
        char *av[] = {"prog", "cmd", "--env-file", (char *)ef, "--d=2.5", NULL};
        CHECK(cli_parse(opts, no, 5, av, 2, &help, err, sizeof err) == 0);
        CHECK(!help);
        CHECK(name && !strcmp(name, "from-env-file"));
        CHECK(n == 7 && d == 2.5 && flag == 1);
        CHECK(roots.n == 3 && !strcmp(roots.v[0], "/a") && !strcmp(roots.v[2], "/c"));
        CHECK(envfile && !strcmp(envfile, ef));
        cli_free(opts, no);
        CHECK(roots.n == 0 && roots.v == NULL);

        /* The real environment beats the file (the file does not overwrite RT_N now
         * that it is set: set it to something else first). */
        setenv("RT_N", "9", 1);
        char *av2[] = {"prog", "cmd", "--root", "/x", "--root=/y", "--n", "11", NULL};
        setenv("RT_ENV_FILE", ef, 1);
        CHECK(cli_parse(opts, no, 7, av2, 2, &help, err, sizeof err) == 0);
        CHECK(n == 11);                                      /* the flag wins over env */
        CHECK(roots.n == 2 && !strcmp(roots.v[0], "/x") && !strcmp(roots.v[1], "/y"));
        cli_free(opts, no);
        char *av3[] = {"prog", "cmd", NULL};
        CHECK(cli_parse(opts, no, 2, av3, 2, &help, err, sizeof err) == 0);
        CHECK(n == 9);                                       /* env beats the file's 7 */
        CHECK(roots.n == 3);                                 /* from the environment */
        cli_free(opts, no);
        unsetenv("RT_ENV_FILE");

        /* An explicitly named .env that does not exist is an error; a malformed one too. */
        char *av4[] = {"prog", "cmd", "--env-file=/nonexistent/x.env", NULL};
        CHECK(cli_parse(opts, no, 3, av4, 2, &help, err, sizeof err) == -1);
        CHECK_MSG(strstr(err, "/nonexistent/x.env") != NULL, "%s", err);
        char *av5[] = {"prog", "cmd", "--env-file", (char *)badp, NULL};
        CHECK(cli_parse(opts, no, 4, av5, 2, &help, err, sizeof err) == -1);
        CHECK_MSG(strstr(err, "bad.env:2:") != NULL, "%s", err);
        cli_free(opts, no);

        /* A missing default .env is ignored. */
        cli_opt dopts[] = {
            {"env-file", NULL, CLI_ENVFILE, "/nonexistent/default.env", "file", &envfile, 0},
        };
        char *av6[] = {"prog", "cmd", NULL};
        CHECK(cli_parse(dopts, 1, 2, av6, 2, &help, err, sizeof err) == 0);

        /* Bad values name their source; empty list flags are refused. */
        setenv("RT_N", "abc", 1);
        CHECK(cli_parse(opts, no, 2, av3, 2, &help, err, sizeof err) == -1);
        CHECK_MSG(strstr(err, "RT_N") && strstr(err, "abc"), "%s", err);
        unsetenv("RT_N");
        char *av7[] = {"prog", "cmd", "--root=", NULL};
        CHECK(cli_parse(opts, no, 3, av7, 2, &help, err, sizeof err) == -1);
        cli_free(opts, no);
    }

    /* ---- existing behaviour: flags, help, unknown options, required ---- */
    {
        const char *model = NULL;
        long k = 0;
        int quiet = 0;
        cli_list lst = {0};
        cli_opt opts[] = {
            {"model", "RT_MODEL", CLI_STR, NULL, "model dir", &model, 1},
            {"k", NULL, CLI_INT, "3", "k", &k, 0},
            {"quiet", NULL, CLI_FLAG, NULL, "quiet", &quiet, 0},
            {"root", NULL, CLI_LIST, NULL, "roots", &lst, 1},
        };
        unsetenv("RT_MODEL");
        char *a1[] = {"p", "c", "--model", "m", "--quiet", "--root", "/r", NULL};
        CHECK(cli_parse(opts, 4, 7, a1, 2, &help, err, sizeof err) == 0);
        CHECK(!strcmp(model, "m") && k == 3 && quiet == 1 && lst.n == 1);
        cli_free(opts, 4);
        char *a2[] = {"p", "c", "--root", "/r", NULL};
        CHECK(cli_parse(opts, 4, 4, a2, 2, &help, err, sizeof err) == -1);
        CHECK_MSG(strstr(err, "--model") && strstr(err, "RT_MODEL"), "%s", err);
        cli_free(opts, 4);
        char *a3[] = {"p", "c", "--model", "m", NULL};
        CHECK(cli_parse(opts, 4, 4, a3, 2, &help, err, sizeof err) == -1);  /* list required */
        CHECK_MSG(strstr(err, "--root") != NULL, "%s", err);
        cli_free(opts, 4);
        char *a4[] = {"p", "c", "--bogus", NULL};
        CHECK(cli_parse(opts, 4, 3, a4, 2, &help, err, sizeof err) == -1);
        CHECK(strstr(err, "unknown option '--bogus'") != NULL);
        cli_free(opts, 4);
        char *a5[] = {"p", "c", "--help", NULL};
        CHECK(cli_parse(opts, 4, 3, a5, 2, &help, err, sizeof err) == 0 && help == 1);
        cli_free(opts, 4);
        char *a6[] = {"p", "c", "--model", NULL};
        CHECK(cli_parse(opts, 4, 3, a6, 2, &help, err, sizeof err) == -1);
        CHECK(strstr(err, "needs a value") != NULL);
        cli_free(opts, 4);
        FILE *devnull = fopen("/dev/null", "w");
        if (devnull) {
            cli_usage(devnull, "usage: p c", opts, 4);
            fclose(devnull);
        }
    }
    /* ---- CLI_NONEMPTY: an empty value is an error naming its source, not "unset" ---- */
    {
        const char *tok = NULL, *envfile = NULL;
        cli_opt opts[] = {
            {"token", "RT_TOKEN", CLI_STR, NULL, "token", &tok, CLI_NONEMPTY},
            {"env-file", "RT_ENV_FILE2", CLI_ENVFILE, NULL, "settings", &envfile, 0},
        };
        unsetenv("RT_TOKEN");
        unsetenv("RT_ENV_FILE2");
        char *n0[] = {"p", "c", NULL};
        CHECK(cli_parse(opts, 2, 2, n0, 2, &help, err, sizeof err) == 0 && tok == NULL);
        cli_free(opts, 2);
        char *n1[] = {"p", "c", "--token", "", NULL};
        CHECK(cli_parse(opts, 2, 4, n1, 2, &help, err, sizeof err) == -1);
        CHECK_MSG(strstr(err, "option --token was given an empty value") != NULL, "%s", err);
        char *n2[] = {"p", "c", "--token=", NULL};
        CHECK(cli_parse(opts, 2, 3, n2, 2, &help, err, sizeof err) == -1);
        CHECK_MSG(strstr(err, "--token") != NULL, "%s", err);
        setenv("RT_TOKEN", "", 1);
        CHECK(cli_parse(opts, 2, 2, n0, 2, &help, err, sizeof err) == -1);
        CHECK_MSG(strstr(err, "environment variable RT_TOKEN is set but empty") != NULL, "%s",
                  err);
        char *n3[] = {"p", "c", "--token", "t0k", NULL};   /* a flag value wins */
        CHECK(cli_parse(opts, 2, 4, n3, 2, &help, err, sizeof err) == 0 && tok &&
              !strcmp(tok, "t0k"));
        unsetenv("RT_TOKEN");
        const char *ef = write_scratch("empty-token.env", "# settings\nRT_TOKEN=\n");
        char *n4[] = {"p", "c", "--env-file", (char *)ef, NULL};
        CHECK(cli_parse(opts, 2, 4, n4, 2, &help, err, sizeof err) == -1);
        CHECK_MSG(strstr(err, "RT_TOKEN is empty in the .env file") && strstr(err, ef), "%s",
                  err);
        unsetenv("RT_TOKEN");   /* the file put it there */
    }
    /* ---- positional arguments (cli_parse_pos): before or after the options ---- */
    {
        const char *dir = NULL;
        int json = 0, n_pos = -1;
        const char *pos[2];
        cli_opt opts[] = {
            {"pubkey", NULL, CLI_STR, NULL, "key", &dir, 0},
            {"json", NULL, CLI_FLAG, NULL, "json", &json, 0},
        };
        char *b1[] = {"p", "verify", "D", "--json", NULL};
        CHECK(cli_parse_pos(opts, 2, 4, b1, 2, &help, pos, 1, &n_pos, err, sizeof err) == 0);
        CHECK(n_pos == 1 && !strcmp(pos[0], "D") && json == 1);
        char *b2[] = {"p", "verify", "--json", "D", NULL};
        CHECK(cli_parse_pos(opts, 2, 4, b2, 2, &help, pos, 1, &n_pos, err, sizeof err) == 0);
        CHECK(n_pos == 1 && !strcmp(pos[0], "D") && json == 1);
        /* an option's value is never positional */
        char *b3[] = {"p", "verify", "--pubkey", "K", "D", NULL};
        CHECK(cli_parse_pos(opts, 2, 5, b3, 2, &help, pos, 1, &n_pos, err, sizeof err) == 0);
        CHECK(n_pos == 1 && !strcmp(pos[0], "D") && dir && !strcmp(dir, "K") && json == 0);
        /* none given; more than max_pos; a dash that is not an option; "--" */
        char *b4[] = {"p", "verify", "--json", NULL};
        CHECK(cli_parse_pos(opts, 2, 3, b4, 2, &help, pos, 1, &n_pos, err, sizeof err) == 0);
        CHECK(n_pos == 0);
        char *b5[] = {"p", "verify", "D", "E", NULL};
        CHECK(cli_parse_pos(opts, 2, 4, b5, 2, &help, pos, 1, &n_pos, err, sizeof err) == -1);
        CHECK(strstr(err, "unexpected argument 'E'") != NULL);
        char *b6[] = {"p", "verify", "-x", NULL};
        CHECK(cli_parse_pos(opts, 2, 3, b6, 2, &help, pos, 1, &n_pos, err, sizeof err) == -1);
        CHECK(strstr(err, "unexpected argument '-x'") != NULL);
        char *b7[] = {"p", "verify", "--json", "--", "--odd-name", NULL};
        CHECK(cli_parse_pos(opts, 2, 5, b7, 2, &help, pos, 1, &n_pos, err, sizeof err) == 0);
        CHECK(n_pos == 1 && !strcmp(pos[0], "--odd-name") && json == 1);
        /* cli_parse still refuses any positional argument */
        CHECK(cli_parse(opts, 2, 4, b1, 2, &help, err, sizeof err) == -1);
        CHECK(strstr(err, "unexpected argument 'D'") != NULL);
    }
    /* --seed of the commands with --shuffle: optional, an integer >= 0, only with it */
    {
        long seed = -1;
        CHECK(cli_shuffle_seed(NULL, 0, &seed, err, sizeof err) == 0 && seed == 0);
        CHECK(cli_shuffle_seed("17", 1, &seed, err, sizeof err) == 0 && seed == 17);
        CHECK(cli_shuffle_seed("17", 0, &seed, err, sizeof err) == -1 &&
              strstr(err, "only applies with --shuffle"));
        CHECK(cli_shuffle_seed("-1", 1, &seed, err, sizeof err) == -1 &&
              strstr(err, "'-1' is not an integer >= 0"));
        CHECK(cli_shuffle_seed("", 1, &seed, err, sizeof err) == -1);
        CHECK(cli_shuffle_seed("3x", 1, &seed, err, sizeof err) == -1);
    }
    TEST_MAIN_END();
}
