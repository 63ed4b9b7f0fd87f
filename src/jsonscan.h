/* jsonscan.h - finding the end of a JSON string's plain run: the first
 * byte that is '"', '\\' or below 0x20, sixteen bytes a step with SSE2
 * (every x86-64), else eight with word arithmetic, then byte by byte.
 * Shared by the two JSON readers, kinesis.codec's decoder (l_codec.c) and
 * the PutRecords answer scanner (answer.c). Header-only (static inline):
 * both call it once per string, in their hottest loop. No allocation; the
 * caller's [p, end) is only read. */
#ifndef KN_JSONSCAN_H
#define KN_JSONSCAN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The bytes of x that are '"', '\\' or below 0x20, as their high bits:
 * zero-byte and less-than tests on a 64-bit word, whose lowest flagged
 * byte is always a true match (higher ones may be borrows). */
static inline uint64_t kn_json_swar_special(uint64_t x)
{
  const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
  uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
  return (((q - ones) & ~q) | ((b - ones) & ~b) | ((x - ones * 0x20) & ~x)) & highs;
}

#if defined(__SSE2__) && defined(__GNUC__)
#include <emmintrin.h>
/* Offset of the first '"', '\\' or byte below 0x20 in p[0..16), or 16. */
static inline size_t kn_json_scan16(const char *p)
{
  const __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
  const __m128i ctl = _mm_set1_epi8(0x1F);
  __m128i hit = _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('"')),
                             _mm_cmpeq_epi8(x, _mm_set1_epi8('\\')));
  int m;
  hit = _mm_or_si128(hit, _mm_cmpeq_epi8(_mm_max_epu8(x, ctl), ctl));
  m = _mm_movemask_epi8(hit);
  return m != 0 ? (size_t)__builtin_ctz((unsigned)m) : 16;
}
#endif

/* The first byte in [p, end) that is '"', '\\' or below 0x20, or end. */
static inline const char *kn_json_find_special(const char *p, const char *end)
{
#if defined(__SSE2__) && defined(__GNUC__)
  while (end - p >= 16) {
    size_t k = kn_json_scan16(p);
    if (k < 16) return p + k;
    p += 16;
  }
#endif
  while (end - p >= 8) {
    uint64_t x, m;
    memcpy(&x, p, 8);
    m = kn_json_swar_special(x);
    if (m != 0) {
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
      /* straight to the lowest flagged byte, always a true match */
      p += (size_t)__builtin_ctzll(m) >> 3;
#endif
      break;
    }
    p += 8;
  }
  while (p < end && *p != '"' && *p != '\\' && (unsigned char)*p >= 0x20) p++;
  return p;
}

#endif
