/* cmd_tokenize.c - `reapctl tokenize --tokenizer DIR_OR_FILE`: JSON Lines {"text": ...}
 * on stdin -> one {"input_ids": [...]} line per input line on stdout, same order, no
 * BOS/EOS. Blank input lines are skipped. The first bad line stops the command with
 * "stdin:LINE: ..." on stderr and exit status 1. No server is involved. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "reap_err.h"
#include "reapctl_cmds.h"
#include "reapctl_common.h"
#include "tokenizer.h"

/* Write {"input_ids": [...]}\n; 0 or -1 on a write error. */
static int write_ids(FILE *out, const int32_t *ids, size_t n)
{
    char buf[16];
    size_t i;
    int k;

    if (fputs("{\"input_ids\": [", out) < 0)
        return -1;
    for (i = 0; i < n; i++) {
        k = snprintf(buf, sizeof buf, i ? ", %d" : "%d", ids[i]);
        if (fwrite(buf, 1, (size_t)k, out) != (size_t)k)
            return -1;
    }
    return fputs("]}\n", out) < 0 ? -1 : 0;
}

static int is_blank(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return 0;
    return 1;
}

int cmd_tokenize(int argc, char **argv)
{
    const char *path = NULL;
    int status = 1, ex;
    char *line = NULL;
    size_t cap = 0, n_ids;
    ssize_t got;
    long long lineno = 0;
    reap_tokenizer *tok = NULL;
    int32_t *ids;
    json_error_t jerr;
    json_t *root, *text;
    const cli_opt opts[] = {
        {"tokenizer", "REAP_TOKENIZER_PATH", CLI_STR, NULL,
         "tokenizer.json, or the model directory that holds it", &path, 1},
    };
    const int n = (int)(sizeof opts / sizeof opts[0]);
    const char *usage = "usage: reapctl tokenize --tokenizer DIR_OR_FILE < texts.jsonl\n"
                        "  stdin: {\"text\": \"...\"} per line; stdout: {\"input_ids\": [...]} "
                        "per line";

    if ((ex = reapctl_parse("tokenize", usage, opts, n, argc, argv, NULL, 0, NULL)) >= 0)
        return ex;
    if (reap_tokenizer_load(path, &tok) != REAP_OK) {
        fprintf(stderr, "reapctl tokenize: %s\n", reap_err_msg());
        return 1;
    }
    while ((got = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        if (is_blank(line, (size_t)got))
            continue;
        root = json_loadb(line, (size_t)got, JSON_ALLOW_NUL, &jerr);
        if (!root) {
            fprintf(stderr, "reapctl tokenize: stdin:%lld: %s (column %d): %s\n", lineno,
                    json_error_code(&jerr) == json_error_invalid_utf8 ? "invalid UTF-8"
                                                                     : "invalid JSON",
                    jerr.column, jerr.text);
            goto done;
        }
        text = json_object_get(root, "text");
        if (!json_is_object(root) || !json_is_string(text)) {
            fprintf(stderr, "reapctl tokenize: stdin:%lld: expected {\"text\": \"...\"}\n",
                    lineno);
            json_decref(root);
            goto done;
        }
        if (reap_tokenizer_encode(tok, json_string_value(text), json_string_length(text),
                                  &ids, &n_ids) != REAP_OK) {
            fprintf(stderr, "reapctl tokenize: stdin:%lld: %s\n", lineno, reap_err_msg());
            json_decref(root);
            goto done;
        }
        json_decref(root);
        if (write_ids(stdout, ids, n_ids)) {
            free(ids);
            fprintf(stderr, "reapctl tokenize: cannot write to stdout\n");
            goto done;
        }
        free(ids);
    }
    if (ferror(stdin)) {
        fprintf(stderr, "reapctl tokenize: stdin:%lld: read error\n", lineno + 1);
        goto done;
    }
    if (fflush(stdout) != 0) {
        fprintf(stderr, "reapctl tokenize: cannot write to stdout\n");
        goto done;
    }
    status = 0;

done:
    free(line);
    reap_tokenizer_free(tok);
    return status;
}
