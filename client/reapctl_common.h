/* reapctl_common.h - what the remote reapctl commands share: connection options
 * (global and per command), exit codes, protobuf -> JSON, and the progress display.
 *
 * Connection options (each command that talks to a service accepts them after its
 * name; given before the command they apply to every command):
 *   --scorer ADDR   REAP_SCORER_ADDR   default 127.0.0.1:50051
 *   --pruner ADDR   REAP_PRUNER_ADDR   default 127.0.0.1:50052
 *   --token T       REAP_TOKEN         bearer token
 *   --token-file F  REAP_TOKEN_FILE    file whose first line is the token
 *   --tls-ca F      REAP_TLS_CA        PEM CA: use TLS and verify the server with it
 *   --tls-cert F, --tls-key F  REAP_TLS_CERT / REAP_TLS_KEY: client certificate (mTLS)
 *   --tls-server-name N        REAP_TLS_SERVER_NAME: expected certificate name
 *   --timeout-ms N  REAP_TIMEOUT_MS    deadline of unary calls (default 30000)
 *
 * Exit codes (every command):
 *   0        success
 *   1        a local failure (a file cannot be read or written, ...)
 *   2        usage error (unknown option, missing argument, bad value)
 *   3        a check failed: verification found problems, a service is not SERVING
 *   10 + c   the server (or the transport) ended the call with gRPC status c, e.g.
 *            13 NOT_FOUND(5) -> 15, PERMISSION_DENIED(7) -> 17, UNAVAILABLE(14) -> 24,
 *            UNAUTHENTICATED(16) -> 26, CANCELLED(1) -> 11
 *
 * Thread rules: single-threaded CLI helpers; reapctl_globals calls setenv (call it from
 * main before anything else).
 */
#ifndef REAP_REAPCTL_COMMON_H
#define REAP_REAPCTL_COMMON_H

#include <signal.h>
#include <stdio.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include "cli.h"
#include "rpc_client.h"

enum {
    REAPCTL_EXIT_OK = 0,
    REAPCTL_EXIT_FAIL = 1,
    REAPCTL_EXIT_USAGE = 2,
    REAPCTL_EXIT_CHECK = 3,
    REAPCTL_EXIT_SERVER = 10   /* + the gRPC status code */
};

/* Which service a connection is for. */
enum { REAPCTL_SCORER = 1, REAPCTL_PRUNER = 2 };

typedef struct reapctl_conn {
    const char *scorer, *pruner;
    const char *token, *token_file;
    const char *tls_ca, *tls_cert, *tls_key, *tls_server_name;
    long timeout_ms;
    int pruner_given;    /* --pruner was given on the command line (globally or here) */
} reapctl_conn;

/* Parse the global options before the command (argv[1..]): each sets the environment
 * variable of the matching per-command option. *cmd receives the index of the command
 * name in argv (argc when there is none). Returns 0, or -1 with a message in err
 * (unknown global option, missing value). */
int reapctl_globals(int argc, char **argv, int *cmd, char *err, size_t errlen);

/* Append the connection options for `which` (REAPCTL_SCORER | REAPCTL_PRUNER) to a cli
 * table at opts[*n] (room for 10 entries); destinations are the fields of *c. */
void reapctl_conn_opts(reapctl_conn *c, int which, cli_opt *opts, int *n);

/* Parse a command's options, argv[2..], against opts[0..n). n_pos NULL: no positional
 * arguments (cli_parse); else up to max_pos of them into pos, their count in *n_pos
 * (cli_parse_pos). On a bad command line print "reapctl <cmd>: <what>" and the usage to
 * stderr and return REAPCTL_EXIT_USAGE; on --help print the usage to stdout and return
 * REAPCTL_EXIT_OK; otherwise return -1: go on with the command. */
int reapctl_parse(const char *cmd, const char *usage, const cli_opt *opts, int n, int argc,
                  char **argv, const char **pos, int max_pos, int *n_pos);

/* After cli_parse: note whether --pruner was given on this command line (argv). */
void reapctl_conn_note(reapctl_conn *c, int argc, char **argv);

/* Open a client for the scorer or the pruner. cancel (may be NULL) is polled by calls.
 * Returns 0, or prints the error and returns an exit code (1 or 2). */
int reapctl_connect(const char *cmd, const reapctl_conn *c, int which,
                    volatile sig_atomic_t *cancel, rpc_client **out);

/* Print "reapctl CMD: CODE_NAME: message" on stderr; return 10 + code (0 for OK). */
int reapctl_call_failed(const char *cmd, const rpc_client_status *st);

/* A protobuf-c message as a JSON object: proto field names; enums by name; 64-bit
 * integers as numbers; non-finite doubles as null; a oneof only with its set member;
 * repeated fields as arrays. New reference (NULL on allocation failure). */
json_t *reapctl_pb_to_json(const ProtobufCMessage *m);

/* Print a message as one line of JSON on stdout. */
void reapctl_print_json(const ProtobufCMessage *m);

/* ---- progress display -------------------------------------------------------------- */

typedef enum { REAPCTL_OUT_BAR, REAPCTL_OUT_LINES, REAPCTL_OUT_JSON } reapctl_out_mode;

/* BAR when stdout is a terminal, else LINES; JSON when json is set. */
reapctl_out_mode reapctl_out_mode_pick(int json);

/* Draw a progress bar line in place: "label [####----] text" (BAR mode only; ends the
 * line when done is set). */
void reapctl_bar(const char *label, double frac, const char *text, int done);

/* "1h02m", "3m20s", "4.6s" */
void reapctl_fmt_duration(double s, char *out, size_t n);

/* Install a SIGINT handler that increments *counter (and SIGTERM likewise). */
void reapctl_on_interrupt(volatile sig_atomic_t *counter);

/* Split "a,b,c" into a NULL-terminated malloc'd array of malloc'd strings (*n entries).
 * Returns 0 or -1 (out of memory). Free with reapctl_strv_free. */
int reapctl_split(const char *s, char ***out, size_t *n);
void reapctl_strv_free(char **v);

/* ---- commands used by other commands ------------------------------------------------ */

/* `reapctl watch` (cmd_score.c). */
int cmd_watch(int argc, char **argv);

/* Verify on the pruner service and print the result (cmd_prune.c): pubkey_b64 NULL for
 * the server's key. Returns 0, REAPCTL_EXIT_CHECK when the check fails, or 10 + code. */
int reapctl_remote_verify(const char *cmd, rpc_client *cl, const char *dir,
                          const char *pubkey_b64, int skip_rehash, int json, long timeout_ms);

#endif
