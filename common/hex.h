/* hex.h - lower-case hexadecimal text of bytes (identities, digests, run ids).
 *
 * Thread rules: pure functions.
 */
#ifndef REAP_HEX_H
#define REAP_HEX_H

#include <stddef.h>
#include <stdint.h>

/* Write the lower-case hex of the n bytes at bin to out, which holds 2n + 1 bytes (the
 * text is NUL-terminated). Never fails. */
void reap_hex(const uint8_t *bin, size_t n, char *out);

#endif
