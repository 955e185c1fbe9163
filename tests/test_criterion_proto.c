/* test_criterion_proto.c - the Criterion wire table (pruner/criterion_proto.h): every
 * criterion maps to the reap.v1.Criterion value whose name is CRITERION_ + its own name
 * (checked against protobuf-c's enum descriptor, not against a second table), back to
 * itself, UNSPECIFIED reads as REAP, and a value outside the enum is refused. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "criterion_proto.h"
#include "keepset.h"
#include "reap_err.h"
#include "test_util.h"

int main(void)
{
    static const reap_criterion all[] = {
        REAP_CRIT_REAP, REAP_CRIT_FREQUENCY, REAP_CRIT_EAN_SUM, REAP_CRIT_EAN_MEAN,
        REAP_CRIT_WEIGHTED_EAN_SUM, REAP_CRIT_WEIGHTED_FREQUENCY, REAP_CRIT_MAX_ACTIVATIONS};
    const ProtobufCEnumDescriptor *d = &reap__v1__criterion__descriptor;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        char want[64];
        const char *name = reap_criterion_name(all[i]);
        size_t k = (size_t)snprintf(want, sizeof want, "CRITERION_");
        for (; *name && k + 1 < sizeof want; name++)
            want[k++] = (char)toupper((unsigned char)*name);
        want[k] = 0;
        Reap__V1__Criterion v = reap_criterion_to_proto(all[i]);
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(d, (int)v);
        CHECK_MSG(ev && !strcmp(ev->name, want), "%s -> %d (%s)", want, (int)v,
                  ev ? ev->name : "no such value");
        reap_criterion back = (reap_criterion)-1;
        CHECK_RC(reap_criterion_from_proto((int)v, &back), REAP_OK);
        CHECK(back == all[i]);
    }
    reap_criterion c = REAP_CRIT_MAX_ACTIVATIONS;
    CHECK_RC(reap_criterion_from_proto(REAP__V1__CRITERION__CRITERION_UNSPECIFIED, &c), REAP_OK);
    CHECK(c == REAP_CRIT_REAP);
    CHECK_RC(reap_criterion_from_proto(8, &c), REAP_E_INVALID);
    CHECK_ERRMSG("8");
    CHECK_RC(reap_criterion_from_proto(-1, &c), REAP_E_INVALID);
    /* Every value of the enum but UNSPECIFIED is one of the table's. */
    CHECK(d->n_values == sizeof all / sizeof all[0] + 1);
    TEST_MAIN_END();
}
