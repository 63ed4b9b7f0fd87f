/* md5.c - MD5 as RFC 1321 specifies it: 64-byte blocks, four rounds of 16
 * steps, the length in bits appended little-endian after a 0x80 byte and
 * zero padding. Test suite: RFC 1321 section A.5, in spec/hashkey_spec.lua,
 * beside every hash key vector of ../shared/vectors. */
#include <string.h>

#include "md5.h"

/* T[i] = floor(2^32 * |sin(i + 1)|), RFC 1321 section 3.4 */
static const uint32_t T[64] = {
  0xd76aa478u, 0xe8c7b756u, 0x242070dbu, 0xc1bdceeeu, 0xf57c0fafu, 0x4787c62au, 0xa8304613u, 0xfd469501u,
  0x698098d8u, 0x8b44f7afu, 0xffff5bb1u, 0x895cd7beu, 0x6b901122u, 0xfd987193u, 0xa679438eu, 0x49b40821u,
  0xf61e2562u, 0xc040b340u, 0x265e5a51u, 0xe9b6c7aau, 0xd62f105du, 0x02441453u, 0xd8a1e681u, 0xe7d3fbc8u,
  0x21e1cde6u, 0xc33707d6u, 0xf4d50d87u, 0x455a14edu, 0xa9e3e905u, 0xfcefa3f8u, 0x676f02d9u, 0x8d2a4c8au,
  0xfffa3942u, 0x8771f681u, 0x6d9d6122u, 0xfde5380cu, 0xa4beea44u, 0x4bdecfa9u, 0xf6bb4b60u, 0xbebfbc70u,
  0x289b7ec6u, 0xeaa127fau, 0xd4ef3085u, 0x04881d05u, 0xd9d4d039u, 0xe6db99e5u, 0x1fa27cf8u, 0xc4ac5665u,
  0xf4292244u, 0x432aff97u, 0xab9423a7u, 0xfc93a039u, 0x655b59c3u, 0x8f0ccc92u, 0xffeff47du, 0x85845dd1u,
  0x6fa87e4fu, 0xfe2ce6e0u, 0xa3014314u, 0x4e0811a1u, 0xf7537e82u, 0xbd3af235u, 0x2ad7d2bbu, 0xeb86d391u,
};

static uint32_t rotl(uint32_t x, unsigned n) { return (x << n) | (x >> (32 - n)); }

/* The round functions of RFC 1321 section 3.4. */
#define F1(x, y, z) (((x) & (y)) | (~(x) & (z)))
#define F2(x, y, z) (((x) & (z)) | ((y) & ~(z)))
#define F3(x, y, z) ((x) ^ (y) ^ (z))
#define F4(x, y, z) ((y) ^ ((x) | ~(z)))
/* One step: a = b + ((a + F(b, c, d) + X[k] + T[i]) <<< s). The caller
 * rotates the names a, b, c, d instead of moving the values. */
#define STEP(F, a, b, c, d, k, i, s) ((a) = (b) + rotl((a) + F((b), (c), (d)) + x[k] + T[i], (s)))

static void block(uint32_t h[4], const uint8_t *p)
{
  uint32_t x[16], a = h[0], b = h[1], c = h[2], d = h[3];
  unsigned i;
  for (i = 0; i < 16; i++)
    x[i] = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 | (uint32_t)p[4 * i + 2] << 16 |
           (uint32_t)p[4 * i + 3] << 24;
  /* four steps per turn, each turn with the shifts its round prescribes;
   * every turn written out with constant indices (a loop over them costs
   * a third more instructions: this runs once per partition key) */
#define TURN1(i) \
  STEP(F1, a, b, c, d, (i), (i), 7); STEP(F1, d, a, b, c, (i) + 1, (i) + 1, 12); \
  STEP(F1, c, d, a, b, (i) + 2, (i) + 2, 17); STEP(F1, b, c, d, a, (i) + 3, (i) + 3, 22)
#define TURN2(i) \
  STEP(F2, a, b, c, d, (5 * (i) + 1) & 15, (i), 5); STEP(F2, d, a, b, c, (5 * (i) + 6) & 15, (i) + 1, 9); \
  STEP(F2, c, d, a, b, (5 * (i) + 11) & 15, (i) + 2, 14); STEP(F2, b, c, d, a, (5 * (i) + 16) & 15, (i) + 3, 20)
#define TURN3(i) \
  STEP(F3, a, b, c, d, (3 * (i) + 5) & 15, (i), 4); STEP(F3, d, a, b, c, (3 * (i) + 8) & 15, (i) + 1, 11); \
  STEP(F3, c, d, a, b, (3 * (i) + 11) & 15, (i) + 2, 16); STEP(F3, b, c, d, a, (3 * (i) + 14) & 15, (i) + 3, 23)
#define TURN4(i) \
  STEP(F4, a, b, c, d, (7 * (i)) & 15, (i), 6); STEP(F4, d, a, b, c, (7 * (i) + 7) & 15, (i) + 1, 10); \
  STEP(F4, c, d, a, b, (7 * (i) + 14) & 15, (i) + 2, 15); STEP(F4, b, c, d, a, (7 * (i) + 21) & 15, (i) + 3, 21)
  TURN1(0); TURN1(4); TURN1(8); TURN1(12);
  TURN2(16); TURN2(20); TURN2(24); TURN2(28);
  TURN3(32); TURN3(36); TURN3(40); TURN3(44);
  TURN4(48); TURN4(52); TURN4(56); TURN4(60);
#undef TURN1
#undef TURN2
#undef TURN3
#undef TURN4
  h[0] += a;
  h[1] += b;
  h[2] += c;
  h[3] += d;
}

void kn_md5_words(const void *data, size_t len, uint32_t h[4])
{
  const uint8_t *p = data;
  uint8_t tail[128];
  size_t rest = len, n, i;
  uint64_t bits = (uint64_t)len << 3;
  h[0] = 0x67452301u;
  h[1] = 0xefcdab89u;
  h[2] = 0x98badcfeu;
  h[3] = 0x10325476u;
  for (; rest >= 64; rest -= 64, p += 64) block(h, p);
  /* the last bytes, 0x80, zeros to 56 mod 64, then the bit length */
  n = rest < 56 ? 64 : 128;
  memset(tail, 0, n);
  if (rest > 0) memcpy(tail, p, rest);
  tail[rest] = 0x80;
  for (i = 0; i < 8; i++) tail[n - 8 + i] = (uint8_t)(bits >> (8 * i));
  block(h, tail);
  if (n == 128) block(h, tail + 64);
}

void kn_md5(const void *data, size_t len, uint8_t out[KN_MD5_LEN])
{
  uint32_t h[4];
  size_t i;
  kn_md5_words(data, len, h);
  for (i = 0; i < 16; i++) out[i] = (uint8_t)(h[i >> 2] >> (8 * (i & 3)));
}
