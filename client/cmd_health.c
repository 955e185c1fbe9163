/* cmd_health.c - `reapctl health [scorer|pruner|all]`: grpc.health.v1 Check of the
 * services (no token needed). Prints one line per service; exit 0 when every one is
 * SERVING, 3 when one answers NOT_SERVING (or an unknown status), 10 + the gRPC code when a
 * call fails (24: UNAVAILABLE, nothing listening). */
#include <stdio.h>
#include <string.h>

#include "health.pb-c.h"
#include "reapctl_cmds.h"
#include "reapctl_common.h"

static int check_one(const char *which_name, const reapctl_conn *c, int which,
                     const char *service, int json, int *worst)
{
    rpc_client *cl = NULL;
    rpc_client_status st;
    ProtobufCMessage *resp = NULL;
    Grpc__Health__V1__HealthCheckRequest q = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    const char *addr = which == REAPCTL_PRUNER ? c->pruner : c->scorer;
    int ex;
    if ((ex = reapctl_connect("health", c, which, NULL, &cl)))
        return ex;
    q.service = (char *)service;
    rpc_code code = rpc_client_unary(cl, "/grpc.health.v1.Health/Check", &q.base,
                                     &grpc__health__v1__health_check_response__descriptor,
                                     c->timeout_ms > 0 ? c->timeout_ms : 5000, &resp, &st);
    const char *status = "?";
    if (code == RPC_OK) {
        int s = ((Grpc__Health__V1__HealthCheckResponse *)resp)->status;
        status = s == 1 ? "SERVING" : s == 2 ? "NOT_SERVING" : s == 3 ? "SERVICE_UNKNOWN"
                                                                          : "UNKNOWN";
        ex = s == 1 ? 0 : REAPCTL_EXIT_CHECK;
    } else {
        status = rpc_code_name(code);
        ex = REAPCTL_EXIT_SERVER + (int)code;
    }
    if (json)
        printf("{\"service\": \"%s\", \"address\": \"%s\", \"status\": \"%s\"%s%s%s}\n",
               which_name, addr, status, code ? ", \"message\": \"" : "",
               code ? "call failed" : "", code ? "\"" : "");
    else
        printf("%-7s %-22s %s%s%s\n", which_name, addr, status, code ? ": " : "",
               code ? st.message : "");
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    rpc_client_close(cl);
    if (ex > *worst)
        *worst = ex;
    return 0;
}

int cmd_health(int argc, char **argv)
{
    const char *which = "all", *service = "";
    int json = 0, n = 0, n_pos = 0, worst = 0, ex;
    const char *pos[1];
    reapctl_conn c;
    cli_opt opts[20];
    opts[n++] = (cli_opt){"service", NULL, CLI_STR, "", "service name to check (default: the "
                          "whole server)", &service, 0};
    opts[n++] = (cli_opt){"json", NULL, CLI_FLAG, NULL, "one JSON object per service", &json, 0};
    reapctl_conn_opts(&c, REAPCTL_SCORER | REAPCTL_PRUNER, opts, &n);
    const char *usage = "usage: reapctl health [scorer|pruner|all] [options]";
    if ((ex = reapctl_parse("health", usage, opts, n, argc, argv, pos, 1, &n_pos)) >= 0)
        return ex;
    if (n_pos)
        which = pos[0];
    int all = !strcmp(which, "all");
    if (!all && strcmp(which, "scorer") && strcmp(which, "pruner")) {
        fprintf(stderr, "reapctl health: '%s' is not scorer, pruner or all\n", which);
        return REAPCTL_EXIT_USAGE;
    }
    if ((all || !strcmp(which, "scorer")) &&
        (ex = check_one("scorer", &c, REAPCTL_SCORER, service, json, &worst)))
        return ex;
    if ((all || !strcmp(which, "pruner")) &&
        (ex = check_one("pruner", &c, REAPCTL_PRUNER, service, json, &worst)))
        return ex;
    return worst;
}
