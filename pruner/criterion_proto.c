/* criterion_proto.c - the one table between reap.v1.Criterion and reap_criterion
 * (criterion_proto.h). */
#include "criterion_proto.h"

#include <stddef.h>

#include "reap_err.h"

static const struct {
    reap_criterion c;
    Reap__V1__Criterion v;
} crit_table[] = {
    {REAP_CRIT_REAP, REAP__V1__CRITERION__CRITERION_REAP},
    {REAP_CRIT_FREQUENCY, REAP__V1__CRITERION__CRITERION_FREQUENCY},
    {REAP_CRIT_EAN_SUM, REAP__V1__CRITERION__CRITERION_EAN_SUM},
    {REAP_CRIT_EAN_MEAN, REAP__V1__CRITERION__CRITERION_EAN_MEAN},
    {REAP_CRIT_WEIGHTED_EAN_SUM, REAP__V1__CRITERION__CRITERION_WEIGHTED_EAN_SUM},
    {REAP_CRIT_WEIGHTED_FREQUENCY, REAP__V1__CRITERION__CRITERION_WEIGHTED_FREQUENCY},
    {REAP_CRIT_MAX_ACTIVATIONS, REAP__V1__CRITERION__CRITERION_MAX_ACTIVATIONS},
};

#define N_CRIT (sizeof crit_table / sizeof crit_table[0])

Reap__V1__Criterion reap_criterion_to_proto(reap_criterion c)
{
    for (size_t i = 0; i < N_CRIT; i++)
        if (crit_table[i].c == c)
            return crit_table[i].v;
    return REAP__V1__CRITERION__CRITERION_REAP;
}

int reap_criterion_from_proto(int v, reap_criterion *out)
{
    if (v == REAP__V1__CRITERION__CRITERION_UNSPECIFIED) {
        *out = REAP_CRIT_REAP;
        return REAP_OK;
    }
    for (size_t i = 0; i < N_CRIT; i++)
        if ((int)crit_table[i].v == v) {
            *out = crit_table[i].c;
            return REAP_OK;
        }
    return reap_err_set(REAP_E_INVALID, "unknown criterion value %d", v);
}
