/* criterion_proto.h - reap.v1.Criterion (proto/reap.proto) <-> reap_criterion (stats.h):
 * the one table between the wire values and the C enum. In pruner/ because the two that
 * send or read a Criterion are the Pruner service's handlers (serve_keepset.c,
 * serve_verify.c) and reapctl (keepset, prune), and client/ may use pruner/ but not
 * service/ (docs/design.md section 0).
 *
 * Thread rules: pure functions.
 */
#ifndef REAP_CRITERION_PROTO_H
#define REAP_CRITERION_PROTO_H

#include "reap.pb-c.h"
#include "stats.h"

/* The wire value of criterion c (never CRITERION_UNSPECIFIED; an unknown c gives
 * CRITERION_REAP, the default). */
Reap__V1__Criterion reap_criterion_to_proto(reap_criterion c);

/* The criterion of wire value v: CRITERION_UNSPECIFIED is REAP (as reap.proto says; a
 * service with its own default tests for UNSPECIFIED first). Returns REAP_OK with *out,
 * or REAP_E_INVALID for a value the table does not know (message names it). */
int reap_criterion_from_proto(int v, reap_criterion *out);

#endif
