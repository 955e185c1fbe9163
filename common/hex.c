/* hex.c - lower-case hexadecimal text of bytes (see hex.h). */
#include "hex.h"

void reap_hex(const uint8_t *bin, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bin[i] >> 4];
        out[2 * i + 1] = digits[bin[i] & 15];
    }
    out[2 * n] = '\0';
}
