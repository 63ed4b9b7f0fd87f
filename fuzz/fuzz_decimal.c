/* fuzz_decimal.c - libFuzzer harness for the decimal parser and the 128-bit
 * arithmetic of src/u128.c (hash keys, sequence numbers, shard ranges).
 * Built with -DKN_U128_PORTABLE, so the library runs its two-64-bit-word
 * code while this harness computes every expected value with the
 * compiler's unsigned __int128: a differential check, not a self-check.
 *
 * Input: "A\nB[\n...]". A and B are parsed strictly and compared with a
 * reference parser (status and value); the operands of the arithmetic are
 * the parsed values, or the raw bytes read big-endian when a parse fails,
 * so the arithmetic is exercised whatever the bytes. Checked: format
 * (exact canonical text, buffer-size contract), cmp, add, sub, mul_u64,
 * divmod_u32, midpoint, split_point, even_range, big-endian round trips. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "u128.h"

__extension__ typedef unsigned __int128 ref_t;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REF_MAX (~(ref_t)0)

static void die(const char *what, const char *a, const char *b)
{
  fprintf(stderr, "fuzz_decimal: %s [%s] [%s]\n", what, a ? a : "", b ? b : "");
  abort();
}

static ref_t to_ref(kn_u128 v)
{
  return (ref_t)kn_u128_hi(v) << 64 | kn_u128_lo(v);
}

static kn_u128 from_ref(ref_t v)
{
  return kn_u128_make((uint64_t)(v >> 64), (uint64_t)v);
}

static const char *ref_text(ref_t v, char buf[KN_U128_DEC_MAX + 1])
{
  char tmp[KN_U128_DEC_MAX];
  size_t n = 0, i;
  do {
    tmp[n++] = (char)('0' + (int)(v % 10));
    v /= 10;
  } while (v != 0);
  for (i = 0; i < n; i++) buf[i] = tmp[n - 1 - i];
  buf[n] = '\0';
  return buf;
}

/* The documented contract of kn_u128_parse, written independently. */
static int ref_parse(const char *s, size_t len, ref_t *out)
{
  ref_t v = 0;
  size_t i;
  if (len == 0) return KN_U128_EEMPTY;
  for (i = 0; i < len; i++)
    if (s[i] < '0' || s[i] > '9') return KN_U128_ESYNTAX;
  if (s[0] == '0' && len > 1) return KN_U128_ELEADZERO;
  for (i = 0; i < len; i++) {
    unsigned d = (unsigned)(s[i] - '0');
    if (v > (REF_MAX - d) / 10) return KN_U128_EOVERFLOW;
    v = v * 10 + d;
  }
  *out = v;
  return KN_U128_OK;
}

static void expect_eq(const char *what, kn_u128 got, ref_t want)
{
  if (to_ref(got) != want) {
    char a[KN_U128_DEC_MAX + 1], b[KN_U128_DEC_MAX + 1];
    die(what, ref_text(to_ref(got), a), ref_text(want, b));
  }
}

static void expect_rc(const char *what, int got, int want)
{
  if (got != want) {
    char a[16], b[16];
    snprintf(a, sizeof a, "%d", got);
    snprintf(b, sizeof b, "%d", want);
    die(what, a, b);
  }
}

/* Parses s[0..len) both ways; returns the operand for the arithmetic. */
static ref_t operand(const char *s, size_t len)
{
  kn_u128 got = kn_u128_make(12345, 678);  /* must survive a failed parse */
  ref_t want = 0, v = 0;
  unsigned char be[16];
  size_t i, k;
  int rc = kn_u128_parse(s, len, &got), ref = ref_parse(s, len, &want);

  expect_rc("parse status", rc, ref);
  if (rc == KN_U128_OK) {
    char text[KN_U128_DEC_MAX + 1];
    size_t n = 0;
    expect_eq("parsed value", got, want);
    expect_rc("format status", kn_u128_format(got, text, sizeof text, &n), KN_U128_OK);
    if (n != len || memcmp(text, s, len) != 0 || text[n] != '\0')
      die("format does not give back the canonical text", text, "");
    return want;
  }
  expect_eq("failed parse wrote *out", got, (ref_t)12345 << 64 | 678);
  /* raw bytes, big-endian, as the operand */
  memset(be, 0, sizeof be);
  k = len < sizeof be ? len : sizeof be;
  memcpy(be + sizeof be - k, s, k);
  for (i = 0; i < 16; i++) v = v << 8 | be[i];
  expect_eq("from_be", kn_u128_from_be(be), v);
  {
    unsigned char back[16];
    kn_u128_to_be(from_ref(v), back);
    if (memcmp(back, be, 16) != 0) die("to_be does not invert from_be", "", "");
  }
  return v;
}

static void check_format(ref_t v)
{
  char text[KN_U128_DEC_MAX + 1], want[KN_U128_DEC_MAX + 1], small[KN_U128_DEC_MAX + 1];
  size_t n = 0, m = 0;
  kn_u128 back;
  expect_rc("format status", kn_u128_format(from_ref(v), text, sizeof text, &n), KN_U128_OK);
  ref_text(v, want);
  if (strcmp(text, want) != 0 || n != strlen(want)) die("format", text, want);
  expect_rc("format in a buffer one too small",
            kn_u128_format(from_ref(v), small, n, &m), KN_U128_ENOSPACE);
  expect_rc("format in an exact buffer", kn_u128_format(from_ref(v), small, n + 1, &m), KN_U128_OK);
  if (m != n || strcmp(small, want) != 0) die("format in an exact buffer", small, want);
  expect_rc("parse of formatted text", kn_u128_parse(text, n, &back), KN_U128_OK);
  expect_eq("parse of formatted text", back, v);
}

static void check_arith(ref_t a, ref_t b)
{
  kn_u128 r = kn_u128_make(0, 0), q = kn_u128_make(0, 0), e = kn_u128_make(0, 0);
  kn_u128 A = from_ref(a), B = from_ref(b);
  uint64_t m = (uint64_t)b;
  uint32_t d = (uint32_t)(b >> 32), rem = 0;
  ref_t lo = a < b ? a : b, hi = a < b ? b : a;
  int want_cmp = a < b ? -1 : a > b;

  expect_rc("cmp", kn_u128_cmp(A, B), want_cmp);

  if (a > REF_MAX - b) {
    expect_rc("add overflow", kn_u128_add(A, B, &r), KN_U128_EOVERFLOW);
  } else {
    expect_rc("add", kn_u128_add(A, B, &r), KN_U128_OK);
    expect_eq("add", r, a + b);
  }
  if (a < b) {
    expect_rc("sub underflow", kn_u128_sub(A, B, &r), KN_U128_EUNDERFLOW);
  } else {
    expect_rc("sub", kn_u128_sub(A, B, &r), KN_U128_OK);
    expect_eq("sub", r, a - b);
  }
  if (m != 0 && a > REF_MAX / m) {
    expect_rc("mul overflow", kn_u128_mul_u64(A, m, &r), KN_U128_EOVERFLOW);
  } else {
    expect_rc("mul", kn_u128_mul_u64(A, m, &r), KN_U128_OK);
    expect_eq("mul", r, a * m);
  }
  if (d == 0) {
    expect_rc("divmod by 0", kn_u128_divmod_u32(A, d, &q, &rem), KN_U128_ERANGE);
  } else {
    expect_rc("divmod", kn_u128_divmod_u32(A, d, &q, &rem), KN_U128_OK);
    expect_eq("quotient", q, a / d);
    if (rem != (uint32_t)(a % d)) die("remainder", "", "");
  }

  if (a > b) expect_rc("midpoint of an inverted range", kn_u128_midpoint(A, B, &r), KN_U128_ERANGE);
  expect_rc("midpoint", kn_u128_midpoint(from_ref(lo), from_ref(hi), &r), KN_U128_OK);
  expect_eq("midpoint", r, lo + (hi - lo) / 2);

  if (hi - lo < 3) {
    expect_rc("split of a narrow range", kn_u128_split_point(from_ref(lo), from_ref(hi), &r),
              KN_U128_ERANGE);
  } else {
    ref_t key = lo + (hi - lo) / 2 + ((hi - lo) & 1);
    expect_rc("split", kn_u128_split_point(from_ref(lo), from_ref(hi), &r), KN_U128_OK);
    expect_eq("split", r, key);
    /* the service's rule: StartingHashKey + 1 < key < EndingHashKey */
    if (!(lo + 1 < key && key < hi)) die("split point breaks the SplitShard rule", "", "");
  }
  if (a > b && hi - lo >= 3)
    expect_rc("split of an inverted range", kn_u128_split_point(A, B, &r), KN_U128_ERANGE);

  {
    uint32_t n = (uint32_t)a, i = n != 0 ? (uint32_t)(b % ((ref_t)n + 1)) : (uint32_t)b;
    if (n == 0 || i >= n) {
      expect_rc("even_range outside", kn_u128_even_range(n, i, &q, &e), KN_U128_ERANGE);
    } else {
      ref_t step = n == 1 ? 0 : REF_MAX / n + (REF_MAX % n == (ref_t)n - 1);
      ref_t s = (ref_t)i * step, t = i == n - 1 ? REF_MAX : s + step - 1;
      expect_rc("even_range", kn_u128_even_range(n, i, &q, &e), KN_U128_OK);
      expect_eq("even_range start", q, s);
      expect_eq("even_range end", e, t);
      if (i + 1 < n) {
        kn_u128 q2, e2;
        expect_rc("even_range next", kn_u128_even_range(n, i + 1, &q2, &e2), KN_U128_OK);
        expect_eq("even ranges are contiguous", q2, t + 1);
      }
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  const char *s = (const char *)data;
  const char *nl = memchr(s, '\n', size);
  size_t alen = nl != NULL ? (size_t)(nl - s) : size;
  const char *b = nl != NULL ? nl + 1 : s + size;
  size_t blen = (size_t)(s + size - b);
  const char *nl2 = memchr(b, '\n', blen);
  ref_t va, vb;

  if (nl2 != NULL) blen = (size_t)(nl2 - b);
  va = operand(s, alen);
  vb = operand(b, blen);
  check_format(va);
  check_format(vb);
  check_arith(va, vb);
  check_arith(vb, va);
  return 0;
}
