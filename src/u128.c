/* u128.c - unsigned 128-bit arithmetic for Kinesis hash keys (see u128.h).
 * A handful of primitives (make/hi/lo, cmp, add, sub, shift, multiply and
 * divide by a machine word) exist twice, once over unsigned __int128 and once
 * over two uint64_t words; everything else is written on top of them, so the
 * two builds differ only in those few lines and share one test suite. */
#include "u128.h"

#include "md5.h"

const char *kn_u128_strerror(int status)
{
  switch (status) {
  case KN_U128_OK: return "ok";
  case KN_U128_EEMPTY: return "empty string";
  case KN_U128_ESYNTAX: return "not a decimal integer (only the digits 0-9 are allowed)";
  case KN_U128_ELEADZERO: return "leading zero";
  case KN_U128_EOVERFLOW: return "greater than 2^128-1";
  case KN_U128_EUNDERFLOW: return "less than 0";
  case KN_U128_ERANGE: return "argument out of range";
  case KN_U128_ENOSPACE: return "buffer too small";
  default: return "unknown error";
  }
}

/* ---- representation-specific primitives ---------------------------------- */

#if KN_U128_NATIVE

kn_u128 kn_u128_make(uint64_t hi, uint64_t lo)
{
  return ((kn_u128)hi << 64) | lo;
}

uint64_t kn_u128_hi(kn_u128 v) { return (uint64_t)(v >> 64); }
uint64_t kn_u128_lo(kn_u128 v) { return (uint64_t)v; }

int kn_u128_cmp(kn_u128 a, kn_u128 b)
{
  return a < b ? -1 : a > b;
}

int kn_u128_add(kn_u128 a, kn_u128 b, kn_u128 *out)
{
  kn_u128 r = a + b;
  if (r < a) return KN_U128_EOVERFLOW;
  *out = r;
  return KN_U128_OK;
}

int kn_u128_sub(kn_u128 a, kn_u128 b, kn_u128 *out)
{
  if (a < b) return KN_U128_EUNDERFLOW;
  *out = a - b;
  return KN_U128_OK;
}

int kn_u128_mul_u64(kn_u128 a, uint64_t m, kn_u128 *out)
{
  if (m != 0 && a > kn_u128_max() / m) return KN_U128_EOVERFLOW;
  *out = a * m;
  return KN_U128_OK;
}

int kn_u128_divmod_u32(kn_u128 a, uint32_t d, kn_u128 *q, uint32_t *r)
{
  if (d == 0) return KN_U128_ERANGE;
  *q = a / d;
  *r = (uint32_t)(a % d);
  return KN_U128_OK;
}

static kn_u128 shr1(kn_u128 v)
{
  return v >> 1;
}

#else /* two 64-bit words */

kn_u128 kn_u128_make(uint64_t hi, uint64_t lo)
{
  kn_u128 v;
  v.hi = hi;
  v.lo = lo;
  return v;
}

uint64_t kn_u128_hi(kn_u128 v) { return v.hi; }
uint64_t kn_u128_lo(kn_u128 v) { return v.lo; }

int kn_u128_cmp(kn_u128 a, kn_u128 b)
{
  if (a.hi != b.hi) return a.hi < b.hi ? -1 : 1;
  if (a.lo != b.lo) return a.lo < b.lo ? -1 : 1;
  return 0;
}

int kn_u128_add(kn_u128 a, kn_u128 b, kn_u128 *out)
{
  uint64_t lo = a.lo + b.lo;
  uint64_t carry = lo < a.lo;
  uint64_t t = a.hi + b.hi;
  uint64_t hi = t + carry;
  if (t < a.hi || hi < t) return KN_U128_EOVERFLOW;
  out->hi = hi;
  out->lo = lo;
  return KN_U128_OK;
}

int kn_u128_sub(kn_u128 a, kn_u128 b, kn_u128 *out)
{
  uint64_t borrow = a.lo < b.lo;
  if (a.hi < b.hi || a.hi - b.hi < borrow) return KN_U128_EUNDERFLOW;
  out->hi = a.hi - b.hi - borrow;
  out->lo = a.lo - b.lo;
  return KN_U128_OK;
}

/* Full 64 x 64 -> 128-bit product from 32-bit halves. */
static void mul64(uint64_t a, uint64_t b, uint64_t *hi, uint64_t *lo)
{
  const uint64_t m32 = 0xffffffffu;
  uint64_t a0 = a & m32, a1 = a >> 32, b0 = b & m32, b1 = b >> 32;
  uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
  uint64_t mid = (p00 >> 32) + (p01 & m32) + (p10 & m32);
  *lo = (mid << 32) | (p00 & m32);
  *hi = p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
}

int kn_u128_mul_u64(kn_u128 a, uint64_t m, kn_u128 *out)
{
  uint64_t h1, l1, h2, l2, hi;
  mul64(a.lo, m, &h1, &l1);
  mul64(a.hi, m, &h2, &l2);
  hi = h1 + l2;
  if (h2 != 0 || hi < h1) return KN_U128_EOVERFLOW;
  out->hi = hi;
  out->lo = l1;
  return KN_U128_OK;
}

/* Schoolbook long division by 32-bit limbs: the running remainder is below
 * d < 2^32, so each partial dividend fits in 64 bits. */
int kn_u128_divmod_u32(kn_u128 a, uint32_t d, kn_u128 *q, uint32_t *r)
{
  uint64_t limb[4], quot[4], rem = 0;
  int k;
  if (d == 0) return KN_U128_ERANGE;
  limb[0] = a.hi >> 32;
  limb[1] = a.hi & 0xffffffffu;
  limb[2] = a.lo >> 32;
  limb[3] = a.lo & 0xffffffffu;
  for (k = 0; k < 4; k++) {
    uint64_t cur = (rem << 32) | limb[k];
    quot[k] = cur / d;
    rem = cur % d;
  }
  q->hi = (quot[0] << 32) | quot[1];
  q->lo = (quot[2] << 32) | quot[3];
  *r = (uint32_t)rem;
  return KN_U128_OK;
}

static kn_u128 shr1(kn_u128 v)
{
  v.lo = (v.lo >> 1) | (v.hi << 63);
  v.hi >>= 1;
  return v;
}

#endif

/* ---- shared code ---------------------------------------------------------- */

kn_u128 kn_u128_max(void)
{
  return kn_u128_make(UINT64_MAX, UINT64_MAX);
}

static int is_zero(kn_u128 v)
{
  return kn_u128_hi(v) == 0 && kn_u128_lo(v) == 0;
}

kn_u128 kn_u128_from_be(const unsigned char be[16])
{
  uint64_t hi = 0, lo = 0;
  int k;
  for (k = 0; k < 8; k++) hi = (hi << 8) | be[k];
  for (k = 8; k < 16; k++) lo = (lo << 8) | be[k];
  return kn_u128_make(hi, lo);
}

void kn_u128_to_be(kn_u128 v, unsigned char be[16])
{
  uint64_t hi = kn_u128_hi(v), lo = kn_u128_lo(v);
  int k;
  for (k = 7; k >= 0; k--, hi >>= 8) be[k] = (unsigned char)(hi & 0xff);
  for (k = 15; k >= 8; k--, lo >>= 8) be[k] = (unsigned char)(lo & 0xff);
}

static uint64_t bswap32(uint32_t x)
{
  return (uint64_t)((x >> 24) | ((x >> 8) & 0xff00u) | ((x << 8) & 0xff0000u) | (x << 24));
}

kn_u128 kn_u128_md5(const void *data, size_t len)
{
  /* the digest's 16 bytes read big-endian: each word's bytes reversed */
  uint32_t h[4];
  kn_md5_words(data, len, h);
  return kn_u128_make(bswap32(h[0]) << 32 | bswap32(h[1]), bswap32(h[2]) << 32 | bswap32(h[3]));
}

static const uint64_t pow10_u64[20] = {
  1u, 10u, 100u, 1000u, 10000u, 100000u, 1000000u, 10000000u, 100000000u,
  1000000000u, 10000000000u, 100000000000u, 1000000000000u, 10000000000000u,
  100000000000000u, 1000000000000000u, 10000000000000000u,
  100000000000000000u, 1000000000000000000u, 10000000000000000000u
};

int kn_u128_parse(const char *s, size_t len, kn_u128 *out)
{
  kn_u128 v = kn_u128_make(0, 0);
  size_t i;
  if (len == 0) return KN_U128_EEMPTY;
  for (i = 0; i < len; i++)
    if (s[i] < '0' || s[i] > '9') return KN_U128_ESYNTAX;
  if (s[0] == '0' && len > 1) return KN_U128_ELEADZERO;
  /* 40 digits without a leading zero are at least 10^39 > 2^128-1. */
  if (len > KN_U128_DEC_MAX) return KN_U128_EOVERFLOW;
  /* 19 digits at a time: 10^19 - 1 still fits in a uint64_t. */
  for (i = 0; i < len;) {
    size_t k = len - i < 19 ? len - i : 19, j;
    uint64_t chunk = 0;
    for (j = 0; j < k; j++) chunk = chunk * 10 + (uint64_t)(s[i + j] - '0');
    if (kn_u128_mul_u64(v, pow10_u64[k], &v) != KN_U128_OK ||
        kn_u128_add(v, kn_u128_make(0, chunk), &v) != KN_U128_OK)
      return KN_U128_EOVERFLOW;
    i += k;
  }
  *out = v;
  return KN_U128_OK;
}

int kn_u128_format(kn_u128 v, char *buf, size_t bufsize, size_t *len)
{
  char tmp[KN_U128_DEC_MAX];
  size_t pos = sizeof tmp, n, k;
  uint32_t r;
  /* Nine digits per division: at most 5 divisions for 39 digits. */
  for (;;) {
    kn_u128_divmod_u32(v, 1000000000u, &v, &r);
    if (is_zero(v)) {
      do {
        tmp[--pos] = (char)('0' + r % 10);
        r /= 10;
      } while (r != 0);
      break;
    }
    for (k = 0; k < 9; k++) {
      tmp[--pos] = (char)('0' + r % 10);
      r /= 10;
    }
  }
  n = sizeof tmp - pos;
  if (bufsize < n + 1) return KN_U128_ENOSPACE;
  for (k = 0; k < n; k++) buf[k] = tmp[pos + k];
  buf[n] = '\0';
  *len = n;
  return KN_U128_OK;
}

int kn_u128_midpoint(kn_u128 lo, kn_u128 hi, kn_u128 *out)
{
  kn_u128 width;
  /* lo + (hi - lo) / 2 == floor((lo + hi) / 2), and never overflows. */
  if (kn_u128_sub(hi, lo, &width) != KN_U128_OK) return KN_U128_ERANGE;
  return kn_u128_add(lo, shr1(width), out);
}

int kn_u128_split_point(kn_u128 lo, kn_u128 hi, kn_u128 *out)
{
  kn_u128 width, half;
  if (kn_u128_sub(hi, lo, &width) != KN_U128_OK) return KN_U128_ERANGE;
  /* kinesalite (AWS-like validation, actions/splitShard.js) rejects a key
   * that is not both > StartingHashKey + 1 and < EndingHashKey: with
   * half = ceil(width / 2) that needs width >= 3. */
  if (kn_u128_cmp(width, kn_u128_make(0, 3)) < 0) return KN_U128_ERANGE;
  half = shr1(width);
  if (kn_u128_lo(width) & 1) kn_u128_add(half, kn_u128_make(0, 1), &half);
  return kn_u128_add(lo, half, out);
}

int kn_u128_even_range(uint32_t n, uint32_t i, kn_u128 *start, kn_u128 *end)
{
  kn_u128 step, s = kn_u128_make(0, 0), e = kn_u128_make(0, 0);
  uint32_t r;
  if (n == 0 || i >= n) return KN_U128_ERANGE;
  if (n == 1) {
    *start = kn_u128_make(0, 0);
    *end = kn_u128_max();
    return KN_U128_OK;
  }
  /* floor(2^128 / n) without 2^128: 2^128 = (2^128-1) + 1 = q*n + r + 1,
   * so the quotient gains one exactly when r + 1 == n. For n >= 2 the step
   * is at most 2^127, and i * step < n * step <= 2^128 cannot overflow. */
  kn_u128_divmod_u32(kn_u128_max(), n, &step, &r);
  if (r == n - 1) kn_u128_add(step, kn_u128_make(0, 1), &step);
  kn_u128_mul_u64(step, i, &s);
  if (i == n - 1) {
    e = kn_u128_max();
  } else {
    kn_u128_add(s, step, &e);
    kn_u128_sub(e, kn_u128_make(0, 1), &e);
  }
  *start = s;
  *end = e;
  return KN_U128_OK;
}
