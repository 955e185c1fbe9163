/* svc_convert.h - the proto <-> C conversions shared by the services and reapctl:
 * reap.v1.Criterion <-> reap_criterion (stats.h). One table (svc_convert.c); every
 * handler and client command that sends or reads a Criterion uses it.
 *
 * The gRPC status of a library failure is rpc_code_from_reap (rpc_status.h), the one
 * owner of that rule; the scorer adds its run manager's statuses (scorer/serve_impl.h).
 *
 * Thread rules: pure functions.
 */
#ifndef REAP_SVC_CONVERT_H
#define REAP_SVC_CONVERT_H

#include "reap.pb-c.h"
#include "stats.h"

/* The wire value of criterion c (never CRITERION_UNSPECIFIED; an unknown c gives
 * CRITERION_REAP, the default). */
Reap__V1__Criterion svc_criterion_to_proto(reap_criterion c);

/* The criterion of wire value v: CRITERION_UNSPECIFIED is REAP (as reap.proto says; a
 * service with its own default tests for UNSPECIFIED first). Returns REAP_OK with *out,
 * or REAP_E_INVALID for a value the table does not know (message names it). */
int svc_criterion_from_proto(int v, reap_criterion *out);

#endif
