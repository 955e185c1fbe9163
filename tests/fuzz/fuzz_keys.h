/* fuzz_keys.h - the throwaway minisign key pair of the minisign and manifest harnesses
 * (made with `minisign -G -W`; its secret key is tests/fuzz/seed-signing.key, for
 * signing seeds, never for anything else), and the file its seed signatures sign. */
#ifndef REAP_FUZZ_KEYS_H
#define REAP_FUZZ_KEYS_H

#define FUZZ_PUB_B64 "RWT6cOrb1GCf/0mIQzgbnrpS2y9tFmqtd88W50RC7+qaoWeohRtZqzFJ"
#define FUZZ_SIGNED_TEXT "reap fuzz\n"

#endif
