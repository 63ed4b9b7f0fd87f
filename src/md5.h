/* md5.h - MD5 (RFC 1321) of a byte string, for the two places Kinesis asks
 * for it: the hash key of a partition key (u128.c) and the checksum that
 * ends a KPL aggregate (kpl.c). Hash keys are computed once per record put,
 * so a call costs a few hundred cycles and no allocation (OpenSSL 3's
 * EVP_Digest looks the algorithm up and allocates a context on every call).
 * Not a security measure: Kinesis uses MD5 to spread keys, not to protect.
 * No Lua, no global state; `data` (len bytes, NULL only when len is 0) and
 * `out` (16 bytes) are owned by the caller and only borrowed. */
#ifndef KN_MD5_H
#define KN_MD5_H

#include <stddef.h>
#include <stdint.h>

#define KN_MD5_LEN 16

void kn_md5(const void *data, size_t len, uint8_t out[KN_MD5_LEN]);
/* The same digest as its four state words: out[4k..4k+3] of kn_md5 are
 * the bytes of h[k], least significant first. */
void kn_md5_words(const void *data, size_t len, uint32_t h[4]);

#endif
