/* crc32.h - CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), the
 * checksum zlib's crc32() computes and the one event-stream messages carry
 * in their prelude and trailer. Table-driven, slicing by 8; no zlib. */
#ifndef KN_CRC32_H
#define KN_CRC32_H

#include <stddef.h>
#include <stdint.h>

/* Extends `crc` (0 to start) over `len` bytes at `data` and returns the new
 * value, so kn_crc32(kn_crc32(0, a, n), b, m) is the CRC of a||b. `data` is
 * borrowed for the call only and may be NULL when len is 0. Any alignment. */
uint32_t kn_crc32(uint32_t crc, const void *data, size_t len);

#endif
