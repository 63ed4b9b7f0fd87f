/* base64.h - RFC 4648 section 4 base64 (standard alphabet, '=' padding).
 * Pure C: no Lua, no I/O, no allocation; the caller sizes and owns every
 * buffer. Decoding is strict, because every producer Kinesis talks to emits
 * canonical base64: see kn_b64_decode for exactly what is rejected. */
#ifndef KN_BASE64_H
#define KN_BASE64_H

#include <stddef.h>

enum {
  KN_B64_OK = 0,
  KN_B64_EBADLEN,  /* length is not a multiple of 4 */
  KN_B64_EBADCHAR, /* a byte outside A-Z a-z 0-9 + / (and not padding) */
  KN_B64_EBADPAD   /* '=' misplaced, or non-zero bits under the padding */
};

/* Length of the encoding of n bytes: 4 * ceil(n / 3). Returns 0 and sets
 * *out_len, or KN_B64_EBADLEN when that length does not fit in a size_t. */
int kn_b64_encoded_len(size_t n, size_t *out_len);

/* Encodes in[0..n) into out, which must hold kn_b64_encoded_len(n) bytes;
 * no NUL is written. Both buffers belong to the caller. Always returns
 * KN_B64_OK. */
int kn_b64_encode(const unsigned char *in, size_t n, char *out);

/* Exact decoded length of in[0..n) from its length and trailing '='. Only
 * the length and the last two bytes are looked at: kn_b64_decode still
 * validates everything. Returns KN_B64_OK or KN_B64_EBADLEN. */
int kn_b64_decoded_len(const char *in, size_t n, size_t *out_len);

/* Decodes in[0..n) into out (kn_b64_decoded_len bytes, owned by the
 * caller) and sets *out_len. Rejected: a length that is not a multiple
 * of 4; any byte outside the alphabet, including whitespace and line
 * breaks; '=' anywhere but the last one or two positions; non-zero unused
 * bits before the padding (a non-canonical encoding such as "QR=="). On
 * failure out holds garbage and *err_pos (may be NULL) is the offset of
 * the offending byte. The empty string decodes to zero bytes. */
int kn_b64_decode(const char *in, size_t n, unsigned char *out,
                  size_t *out_len, size_t *err_pos);

/* Static English text for a KN_B64_* code. */
const char *kn_b64_strerror(int code);

#endif
