/* buf.c - the growable byte buffer of buf.h: capacity doubles (from 64
 * bytes) so appends cost amortised O(1), and one byte more than len is
 * always allocated so the data can stay NUL-terminated. */
#include "buf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define KN_BUF_MIN 64

void kn_buf_init(kn_buf *b)
{
  b->data = NULL;
  b->len = b->cap = 0;
}

int kn_buf_reserve(kn_buf *b, size_t extra)
{
  size_t need, cap;
  char *p;
  if (extra > SIZE_MAX - 1 - b->len) return -1;
  need = b->len + extra + 1;
  if (need > b->cap) {
    cap = b->cap > KN_BUF_MIN ? b->cap : KN_BUF_MIN;
    while (cap < need) {
      if (cap > SIZE_MAX / 2) { cap = need; break; }
      cap *= 2;
    }
    p = (char *)realloc(b->data, cap);
    if (p == NULL) return -1;
    b->data = p;
    b->cap = cap;
  }
  b->data[b->len] = '\0';
  return 0;
}

int kn_buf_append(kn_buf *b, const void *p, size_t n)
{
  if (kn_buf_reserve(b, n) != 0) return -1;
  if (n > 0) memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

int kn_buf_append_str(kn_buf *b, const char *s)
{
  return kn_buf_append(b, s, strlen(s));
}

void kn_buf_reset(kn_buf *b)
{
  b->len = 0;
  if (b->data != NULL) b->data[0] = '\0';
}

void kn_buf_free(kn_buf *b)
{
  free(b->data);
  kn_buf_init(b);
}
