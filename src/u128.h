/* u128.h - exact unsigned 128-bit arithmetic for Kinesis hash keys.
 * A hash key is MD5(partition key) read as a big-endian unsigned 128-bit
 * integer; shard ranges are inclusive [start, end] pairs of such values.
 * Uses the compiler's unsigned __int128 where it exists, a two-word struct
 * otherwise (or when built with -DKN_U128_PORTABLE); both pass one test suite.
 * No Lua, no I/O, no global state. Values are passed and returned by value;
 * every pointer argument is owned by the caller and only borrowed. */
#ifndef KN_U128_H
#define KN_U128_H

#include <stddef.h>
#include <stdint.h>

#if defined(__SIZEOF_INT128__) && !defined(KN_U128_PORTABLE)
#define KN_U128_NATIVE 1
__extension__ typedef unsigned __int128 kn_u128;
#else
#define KN_U128_NATIVE 0
typedef struct kn_u128 {
  uint64_t hi, lo;
} kn_u128;
#endif

/* Status codes: 0 is success, every error is negative. */
#define KN_U128_OK         0
#define KN_U128_EEMPTY    -1 /* parse: empty string */
#define KN_U128_ESYNTAX   -2 /* parse: a byte that is not 0-9 */
#define KN_U128_ELEADZERO -3 /* parse: leading zero (only "0" may start with 0) */
#define KN_U128_EOVERFLOW -4 /* result above 2^128-1 */
#define KN_U128_EUNDERFLOW -5 /* result below 0 */
#define KN_U128_ERANGE    -6 /* argument outside the accepted range */
#define KN_U128_ENOSPACE  -7 /* output buffer too small */

/* Longest decimal form: 2^128-1 = 340282366920938463463374607431768211455. */
#define KN_U128_DEC_MAX 39

/* A static English text for a status code; never NULL. */
const char *kn_u128_strerror(int status);

/* Constructors and accessors (total functions, no status). */
kn_u128 kn_u128_make(uint64_t hi, uint64_t lo);
kn_u128 kn_u128_max(void); /* 2^128-1 */
uint64_t kn_u128_hi(kn_u128 v);
uint64_t kn_u128_lo(kn_u128 v);

/* -1, 0 or 1 as a <, ==, > b. */
int kn_u128_cmp(kn_u128 a, kn_u128 b);

/* The 16 bytes at `be` (caller's) read as a big-endian unsigned integer. */
kn_u128 kn_u128_from_be(const unsigned char be[16]);
/* Writes v big-endian into the caller's 16-byte buffer. */
void kn_u128_to_be(kn_u128 v, unsigned char be[16]);

/* MD5 of len bytes at data (binary-safe; data may be NULL when len is 0),
 * as the Kinesis hash key (md5.c; it cannot fail). */
kn_u128 kn_u128_md5(const void *data, size_t len);

/* Strict decimal parse of len bytes at s (not NUL-terminated, binary-safe):
 * digits only, no sign or spaces, no leading zero except "0" itself, at most
 * 2^128-1. Anything else is an error, never a wrap-around; *out is written
 * only on success. */
int kn_u128_parse(const char *s, size_t len, kn_u128 *out);

/* Decimal form of v into buf (caller's, bufsize bytes), NUL-terminated;
 * *len gets the digit count. KN_U128_ENOSPACE if bufsize < digits + 1
 * (KN_U128_DEC_MAX + 1 always suffices). */
int kn_u128_format(kn_u128 v, char *buf, size_t bufsize, size_t *len);

/* a + b, a - b, a * m: KN_U128_EOVERFLOW / KN_U128_EUNDERFLOW instead of
 * wrapping; *out is written only on success. */
int kn_u128_add(kn_u128 a, kn_u128 b, kn_u128 *out);
int kn_u128_sub(kn_u128 a, kn_u128 b, kn_u128 *out);
int kn_u128_mul_u64(kn_u128 a, uint64_t m, kn_u128 *out);

/* Quotient and remainder of a / d. KN_U128_ERANGE when d is 0. */
int kn_u128_divmod_u32(kn_u128 a, uint32_t d, kn_u128 *q, uint32_t *r);

/* floor((lo + hi) / 2) of the inclusive range [lo, hi], computed without
 * overflow. KN_U128_ERANGE when lo > hi. */
int kn_u128_midpoint(kn_u128 lo, kn_u128 hi, kn_u128 *out);

/* The NewStartingHashKey that splits the inclusive range [lo, hi] in half:
 * the first key of the upper half, lo + ceil((hi - lo) / 2), so both halves
 * hold the same number of keys (the upper one a key more when the count is
 * odd); for [0, 2^128-1] it is 2^127. The service requires
 * lo + 1 < key < hi, so a range of fewer than 4 keys gives KN_U128_ERANGE. */
int kn_u128_split_point(kn_u128 lo, kn_u128 hi, kn_u128 *out);

/* Range i (0-based) of n when [0, 2^128-1] is cut into n contiguous ranges
 * the way a new stream is laid out (AWS, reproduced by kinesalite): start at
 * i * floor(2^128 / n), end one before the next start, the last ending at
 * 2^128-1. KN_U128_ERANGE unless 1 <= n and i < n. */
int kn_u128_even_range(uint32_t n, uint32_t i, kn_u128 *start, kn_u128 *end);

#endif
