/* base64.c - strict RFC 4648 base64 for record Data on the PutRecord and
 * GetRecords paths. Decoding is one table-driven pass that validates and
 * writes at once (no pre-scan); the slow path only runs to name the
 * offending byte after a failure. */
#include "base64.h"

#include <stdint.h>

static const char kn_b64_alphabet[64] =
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Byte -> 6-bit value; 255 for everything outside the alphabet ('=' too:
 * padding is only legal in the last quad, which is handled apart). */
static const unsigned char kn_b64_dec[256] = {
  255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,
  255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,
  255,255,255,255,255,255,255,255,255,255,255, 62,255,255,255, 63,
   52, 53, 54, 55, 56, 57, 58, 59, 60, 61,255,255,255,255,255,255,
  255,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14,
   15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,255,255,255,255,255,
  255, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
   41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51,255,255,255,255,255,
  255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,
  255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,
  255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,
  255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,
  255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,
  255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,
  255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,
  255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,255,
};

int kn_b64_encoded_len(size_t n, size_t *out_len)
{
  size_t groups = n / 3 + (n % 3 != 0);
  if (groups > SIZE_MAX / 4) return KN_B64_EBADLEN;
  *out_len = groups * 4;
  return KN_B64_OK;
}

int kn_b64_encode(const unsigned char *in, size_t n, char *out)
{
  const char *A = kn_b64_alphabet;
  size_t i = 0;
  for (; n - i >= 3; i += 3, out += 4) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    out[0] = A[v >> 18];
    out[1] = A[(v >> 12) & 63];
    out[2] = A[(v >> 6) & 63];
    out[3] = A[v & 63];
  }
  if (n - i == 1) {
    uint32_t v = (uint32_t)in[i] << 16;
    out[0] = A[v >> 18];
    out[1] = A[(v >> 12) & 63];
    out[2] = '=';
    out[3] = '=';
  } else if (n - i == 2) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
    out[0] = A[v >> 18];
    out[1] = A[(v >> 12) & 63];
    out[2] = A[(v >> 6) & 63];
    out[3] = '=';
  }
  return KN_B64_OK;
}

int kn_b64_decoded_len(const char *in, size_t n, size_t *out_len)
{
  size_t len;
  if (n % 4 != 0) return KN_B64_EBADLEN;
  len = n / 4 * 3;
  if (n > 0 && in[n - 1] == '=') len -= (in[n - 2] == '=') ? 2 : 1;
  *out_len = len;
  return KN_B64_OK;
}

/* Classifies the first bad byte of a quad that failed the fast check. */
static int kn_b64_locate(const unsigned char *q, size_t base, size_t *err_pos)
{
  int k;
  for (k = 0; k < 4; k++) {
    if (kn_b64_dec[q[k]] == 255) {
      if (err_pos != NULL) *err_pos = base + (size_t)k;
      return q[k] == '=' ? KN_B64_EBADPAD : KN_B64_EBADCHAR;
    }
  }
  return KN_B64_OK; /* not reached for a quad that failed */
}

int kn_b64_decode(const char *in, size_t n, unsigned char *out,
                  size_t *out_len, size_t *err_pos)
{
  const unsigned char *p = (const unsigned char *)in;
  const unsigned char *D = kn_b64_dec;
  size_t quads, i;
  unsigned char *o = out;
  unsigned a, b, c, d;

  if (n % 4 != 0) {
    if (err_pos != NULL) *err_pos = n;
    return KN_B64_EBADLEN;
  }
  if (n == 0) {
    *out_len = 0;
    return KN_B64_OK;
  }
  quads = n / 4;
  /* Every quad but the last: no padding allowed. */
  for (i = 0; i + 1 < quads; i++, p += 4, o += 3) {
    a = D[p[0]]; b = D[p[1]]; c = D[p[2]]; d = D[p[3]];
    if ((a | b | c | d) & 0x80) return kn_b64_locate(p, i * 4, err_pos);
    o[0] = (unsigned char)(a << 2 | b >> 4);
    o[1] = (unsigned char)(b << 4 | c >> 2);
    o[2] = (unsigned char)(c << 6 | d);
  }
  /* Last quad: "xxxx", "xxx=" or "xx==", with zero bits under the '='. */
  a = D[p[0]]; b = D[p[1]];
  if ((a | b) & 0x80) return kn_b64_locate(p, i * 4, err_pos);
  o[0] = (unsigned char)(a << 2 | b >> 4);
  if (p[3] == '=' && p[2] == '=') {
    if (b & 0x0f) goto noncanonical;
    *out_len = (size_t)(o - out) + 1;
    return KN_B64_OK;
  }
  c = D[p[2]];
  if (c & 0x80) return kn_b64_locate(p, i * 4, err_pos);
  o[1] = (unsigned char)(b << 4 | c >> 2);
  if (p[3] == '=') {
    if (c & 0x03) goto noncanonical;
    *out_len = (size_t)(o - out) + 2;
    return KN_B64_OK;
  }
  d = D[p[3]];
  if (d & 0x80) return kn_b64_locate(p, i * 4, err_pos);
  o[2] = (unsigned char)(c << 6 | d);
  *out_len = (size_t)(o - out) + 3;
  return KN_B64_OK;

noncanonical:
  if (err_pos != NULL) *err_pos = i * 4 + (p[2] == '=' ? 1 : 2);
  return KN_B64_EBADPAD;
}

const char *kn_b64_strerror(int code)
{
  switch (code) {
  case KN_B64_OK: return "ok";
  case KN_B64_EBADLEN: return "length is not a multiple of 4";
  case KN_B64_EBADCHAR: return "invalid character";
  case KN_B64_EBADPAD: return "invalid padding";
  default: return "unknown error";
  }
}
