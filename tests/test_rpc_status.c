/* test_rpc_status.c - unit tests for rpc/rpc_status.c: gRPC code names and the
 * REAP_E_* -> gRPC status mapping (each expected code is the one rpc_status.h
 * documents). */
#include "reap_err.h"
#include "rpc_status.h"
#include "test_util.h"

int main(void)
{
    /* Every REAP_E_* value and its documented gRPC code. */
    static const struct {
        int reap;
        rpc_code want;
    } map[] = {
        {REAP_OK, RPC_OK},
        {REAP_E_IO, RPC_INTERNAL},
        {REAP_E_FORMAT, RPC_FAILED_PRECONDITION},
        {REAP_E_INVALID, RPC_INVALID_ARGUMENT},
        {REAP_E_NOTFOUND, RPC_NOT_FOUND},
        {REAP_E_UNSUPPORTED, RPC_FAILED_PRECONDITION},
        {REAP_E_NOMEM, RPC_RESOURCE_EXHAUSTED},
        {REAP_E_NUMERIC, RPC_FAILED_PRECONDITION},
        {REAP_E_DEVICE, RPC_INTERNAL},
        {REAP_E_CANCELLED, RPC_CANCELLED},
        {REAP_E_INTERNAL, RPC_INTERNAL},
        {REAP_E_CONFLICT, RPC_ALREADY_EXISTS},
        {REAP_E_PRECONDITION, RPC_FAILED_PRECONDITION},
        {REAP_E_DENIED, RPC_PERMISSION_DENIED},
        {-999, RPC_UNKNOWN},
        {7, RPC_UNKNOWN},
    };
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        CHECK_MSG(rpc_code_from_reap(map[i].reap) == map[i].want, "REAP %d -> %s, want %s",
                  map[i].reap, rpc_code_name(rpc_code_from_reap(map[i].reap)),
                  rpc_code_name(map[i].want));

    /* Names: the canonical gRPC spellings, and parse inverts name. */
    CHECK(!strcmp(rpc_code_name(RPC_OK), "OK"));
    CHECK(!strcmp(rpc_code_name(RPC_INVALID_ARGUMENT), "INVALID_ARGUMENT"));
    CHECK(!strcmp(rpc_code_name(RPC_PERMISSION_DENIED), "PERMISSION_DENIED"));
    CHECK(!strcmp(rpc_code_name(RPC_UNAUTHENTICATED), "UNAUTHENTICATED"));
    CHECK(!strcmp(rpc_code_name(RPC_UNIMPLEMENTED), "UNIMPLEMENTED"));
    CHECK(!strcmp(rpc_code_name(17), "UNKNOWN_CODE"));
    CHECK(!strcmp(rpc_code_name(-1), "UNKNOWN_CODE"));
    for (int c = 0; c <= RPC_CODE_MAX; c++) {
        rpc_code back;
        CHECK(rpc_code_parse(rpc_code_name(c), &back) == 0 && (int)back == c);
    }
    rpc_code x;
    CHECK(rpc_code_parse("resource_exhausted", &x) == 0 && x == RPC_RESOURCE_EXHAUSTED);
    CHECK(rpc_code_parse("NOPE", &x) == -1);
    CHECK(rpc_code_parse(NULL, &x) == -1);
    /* The numeric values are gRPC's (wire contract). */
    CHECK(RPC_CANCELLED == 1 && RPC_NOT_FOUND == 5 && RPC_ALREADY_EXISTS == 6 &&
          RPC_PERMISSION_DENIED == 7 && RPC_RESOURCE_EXHAUSTED == 8 &&
          RPC_FAILED_PRECONDITION == 9 && RPC_UNIMPLEMENTED == 12 && RPC_INTERNAL == 13 &&
          RPC_UNAVAILABLE == 14 && RPC_UNAUTHENTICATED == 16);
    TEST_MAIN_END();
}
