/* buf.h - the one growable byte buffer of the C core (signing, transport,
 * codecs). The buffer owns `data`; after any successful call that leaves
 * data non-NULL, data[len] is a NUL kept after the bytes (so text can be
 * handed to C string functions), though the bytes themselves may hold NULs.
 * Pointers into data are invalidated by the next append or reserve. */
#ifndef KN_BUF_H
#define KN_BUF_H

#include <stddef.h>

typedef struct kn_buf {
  char *data; /* owned; NULL until the first allocation */
  size_t len; /* bytes in use, not counting the trailing NUL */
  size_t cap; /* bytes allocated (room for len + the NUL) */
} kn_buf;

/* Empty, no allocation. */
void kn_buf_init(kn_buf *b);
/* Room for len + extra bytes (+1 for the NUL kept after data).
 * 0 ok, -1 out of memory or size overflow (b unchanged). */
int kn_buf_reserve(kn_buf *b, size_t extra);
/* Appends p[0..n) (p may be NULL when n is 0). 0 ok, -1 out of memory. */
int kn_buf_append(kn_buf *b, const void *p, size_t n);
/* Appends the NUL-terminated s, without its NUL. 0 ok, -1 out of memory. */
int kn_buf_append_str(kn_buf *b, const char *s);
/* len = 0, keeps the memory. */
void kn_buf_reset(kn_buf *b);
/* Frees data and goes back to the init state; idempotent. */
void kn_buf_free(kn_buf *b);

#endif
