/* eventstream.c - application/vnd.amazon.eventstream framing: a streaming
 * decoder (bytes in, whole checked messages out) and an encoder. Strict:
 * both CRCs, every length against its enclosing block, no empty or repeated
 * header names. Memory is lent by the caller (see eventstream.h), so nothing
 * here allocates and a hostile length can never make anything allocate. */
#include "eventstream.h"

#include <stdio.h>
#include <string.h>

#include "crc32.h"

/* Up to this many headers are checked for duplicates pairwise without
 * scratch; more are sorted (heap sort, O(n log n) whatever the names). */
#define SMALL_HEADER_COUNT 16
#define MIN_BUFFER 4096

static uint32_t rd16(const uint8_t *p)
{
  return (uint32_t)p[0] << 8 | (uint32_t)p[1];
}

static uint32_t rd32(const uint8_t *p)
{
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
         (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static uint64_t rd64(const uint8_t *p)
{
  return (uint64_t)rd32(p) << 32 | (uint64_t)rd32(p + 4);
}

/* Two's complement reinterpretation without implementation-defined casts. */
static int64_t as_signed(uint64_t u, unsigned bits)
{
  uint64_t sign = (uint64_t)1 << (bits - 1);
  if (u < sign) return (int64_t)u;
  if (bits == 64) return -(int64_t)(~u) - 1;
  return (int64_t)u - (int64_t)(sign << 1);
}

static uint8_t *wr16(uint8_t *p, uint32_t v)
{
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
  return p + 2;
}

static uint8_t *wr32(uint8_t *p, uint32_t v)
{
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
  return p + 4;
}

static uint8_t *wr64(uint8_t *p, uint64_t v)
{
  wr32(p, (uint32_t)(v >> 32));
  return wr32(p + 4, (uint32_t)v);
}

/* Fixed value size of a header type, -1 for length-prefixed, -2 unknown. */
static int value_size(int type)
{
  switch (type) {
  case KN_ES_BOOL_TRUE:
  case KN_ES_BOOL_FALSE: return 0;
  case KN_ES_BYTE: return 1;
  case KN_ES_INT16: return 2;
  case KN_ES_INT32: return 4;
  case KN_ES_INT64:
  case KN_ES_TIMESTAMP: return 8;
  case KN_ES_UUID: return 16;
  case KN_ES_BYTES:
  case KN_ES_STRING: return -1;
  default: return -2;
  }
}

/* Parses one header at *pos; on error *why says what was wrong. */
static int read_header(const uint8_t *block, size_t len, size_t *pos,
                       kn_es_header *out, const char **why)
{
  size_t at = *pos, name_len, vlen;
  int size;

  if (at >= len) return KN_ES_END;
  name_len = block[at++];
  if (name_len == 0) {
    *why = "empty header name";
    return KN_ES_EEMPTY_NAME;
  }
  if (name_len > len - at) {
    *why = "name runs past end of headers block";
    return KN_ES_EHEADER;
  }
  out->name = block + at;
  out->name_len = name_len;
  at += name_len;
  if (at >= len) {
    *why = "value type runs past end of headers block";
    return KN_ES_EHEADER;
  }
  out->type = block[at++];
  size = value_size(out->type);
  if (size == -2) {
    *why = "unknown header value type";
    return KN_ES_EHEADER;
  }
  if (size == -1) {
    if (len - at < 2) {
      *why = "value length runs past end of headers block";
      return KN_ES_EHEADER;
    }
    vlen = rd16(block + at);
    at += 2;
  } else {
    vlen = (size_t)size;
  }
  if (vlen > len - at) {
    *why = "value runs past end of headers block";
    return KN_ES_EHEADER;
  }
  out->i = 0;
  out->data = NULL;
  out->data_len = 0;
  switch (out->type) {
  case KN_ES_BOOL_TRUE: out->i = 1; break;
  case KN_ES_BOOL_FALSE: break;
  case KN_ES_BYTE: out->i = as_signed(block[at], 8); break;
  case KN_ES_INT16: out->i = as_signed(rd16(block + at), 16); break;
  case KN_ES_INT32: out->i = as_signed(rd32(block + at), 32); break;
  case KN_ES_INT64:
  case KN_ES_TIMESTAMP: out->i = as_signed(rd64(block + at), 64); break;
  default: /* bytes, string, uuid */
    out->data = block + at;
    out->data_len = vlen;
    break;
  }
  *pos = at + vlen;
  return KN_ES_OK;
}

int kn_es_header_read(const uint8_t *block, size_t len, size_t *pos,
                      kn_es_header *out)
{
  const char *why = NULL;
  return read_header(block, len, pos, out, &why);
}

/* Orders two header names given as offsets of their length byte. */
static int name_cmp(const uint8_t *block, uint32_t a, uint32_t b)
{
  size_t la = block[a], lb = block[b];
  int c = memcmp(block + a + 1, block + b + 1, la < lb ? la : lb);
  if (c != 0) return c;
  return (la > lb) - (la < lb);
}

static void sift_down(const uint8_t *block, uint32_t *v, size_t root,
                      size_t n)
{
  for (;;) {
    size_t child = 2 * root + 1;
    uint32_t t;
    if (child >= n) return;
    if (child + 1 < n && name_cmp(block, v[child], v[child + 1]) < 0) child++;
    if (name_cmp(block, v[root], v[child]) >= 0) return;
    t = v[root];
    v[root] = v[child];
    v[child] = t;
    root = child;
  }
}

static void heap_sort(const uint8_t *block, uint32_t *v, size_t n)
{
  size_t i;
  for (i = n / 2; i-- > 0;) sift_down(block, v, i, n);
  for (i = n; i-- > 1;) {
    uint32_t t = v[0];
    v[0] = v[i];
    v[i] = t;
    sift_down(block, v, 0, i);
  }
}

/* Bytes of scratch the duplicate check needs for n headers: n offsets
 * plus slack to align them. */
static size_t scratch_bytes(size_t n)
{
  return n <= SMALL_HEADER_COUNT ? 0 : n * sizeof(uint32_t) + sizeof(uint32_t);
}

/* Copies a header name into `dst` for an error text, printable ASCII only. */
static void printable_name(char *dst, size_t cap, const uint8_t *name,
                           size_t len)
{
  size_t i, n = len < cap - 1 ? len : cap - 1;
  for (i = 0; i < n; i++)
    dst[i] = (name[i] >= 0x20 && name[i] < 0x7f) ? (char)name[i] : '?';
  dst[n] = '\0';
}

/* Index of the first header whose name repeats an earlier one in sorted
 * or pairwise order, or n when all names differ. offs[] holds the offset
 * of each header's name length byte; it is reordered when n is large. */
static size_t find_duplicate(const uint8_t *block, uint32_t *offs, size_t n)
{
  size_t i, j;

  if (n > SMALL_HEADER_COUNT) {
    heap_sort(block, offs, n);
    for (i = 1; i < n; i++)
      if (name_cmp(block, offs[i - 1], offs[i]) == 0) return i;
    return n;
  }
  for (i = 1; i < n; i++)
    for (j = 0; j < i; j++)
      if (name_cmp(block, offs[j], offs[i]) == 0) return i;
  return n;
}

/* Checks a whole headers block: structure, then unique names. `scratch`
 * (scratch_cap bytes, may be NULL) holds offsets when there are more than
 * SMALL_HEADER_COUNT headers; if it is too small, *count says how many
 * headers there are and KN_ES_NEED_SPACE comes back. Error text goes to
 * `detail` when it is not NULL. */
static int check_headers(const uint8_t *block, size_t len, uint8_t *scratch,
                         size_t scratch_cap, size_t *count, char *detail,
                         size_t detail_cap)
{
  uint32_t small[SMALL_HEADER_COUNT], *offs = small;
  size_t pos = 0, n = 0, i;
  kn_es_header h;
  const char *why = NULL;
  char name[48];
  int rc;

  while ((rc = read_header(block, len, &pos, &h, &why)) == KN_ES_OK) n++;
  *count = n;
  if (rc != KN_ES_END) {
    if (detail != NULL)
      snprintf(detail, detail_cap, "header %zu (offset %zu): %s", n + 1,
               pos, why);
    return rc;
  }
  if (n > SMALL_HEADER_COUNT) {
    if (scratch == NULL || scratch_cap < scratch_bytes(n))
      return KN_ES_NEED_SPACE;
    offs = (uint32_t *)(void *)(scratch +
                                (-(uintptr_t)scratch & (sizeof *offs - 1)));
  }
  pos = 0;
  for (i = 0; i < n; i++) {
    offs[i] = (uint32_t)pos;
    read_header(block, len, &pos, &h, &why);
  }
  i = find_duplicate(block, offs, n);
  if (i < n) {
    if (detail != NULL) {
      printable_name(name, sizeof name, block + offs[i] + 1, block[offs[i]]);
      snprintf(detail, detail_cap, "header name '%s' appears twice", name);
    }
    return KN_ES_EDUPLICATE;
  }
  return KN_ES_OK;
}

static int fail(kn_es_decoder *d, int code)
{
  d->status = code;
  d->start = d->end = 0;
  d->crc_ok = 0;
  return code;
}

void kn_es_decoder_init(kn_es_decoder *d, size_t max_message)
{
  memset(d, 0, sizeof *d);
  if (max_message == 0 || max_message > KN_ES_MAX_MESSAGE)
    max_message = KN_ES_MAX_MESSAGE;
  if (max_message < KN_ES_OVERHEAD) max_message = KN_ES_OVERHEAD;
  d->max_message = max_message;
}

/* New capacity for `need` bytes: at least double, so growth is amortised. */
static size_t grown(size_t cap, size_t need)
{
  size_t c = cap <= ((size_t)-1) / 2 ? cap * 2 : need;
  if (c < need) c = need;
  if (c < MIN_BUFFER) c = MIN_BUFFER;
  return c;
}

int kn_es_decoder_feed(kn_es_decoder *d, const uint8_t *data, size_t len)
{
  size_t held;

  if (d->status != 0) return d->status;
  if (len == 0) return KN_ES_OK;
  held = d->end - d->start;
  if (held == 0) d->start = d->end = 0;
  if (len > ((size_t)-1) - held) {
    snprintf(d->detail, sizeof d->detail, "cannot hold %zu more bytes", len);
    return KN_ES_ETOO_LARGE;
  }
  if (d->cap - d->end < len) {
    /* Compact only when the bytes moved are no more than the room won, so a
     * caller that drains slowly cannot make every feed move the buffer. */
    if (held + len <= d->cap && d->start >= held) {
      memmove(d->buf, d->buf + d->start, held);
      d->start = 0;
      d->end = held;
    } else {
      d->wanted = grown(d->cap, held + len);
      return KN_ES_NEED_SPACE;
    }
  }
  memcpy(d->buf + d->end, data, len);
  d->end += len;
  return KN_ES_OK;
}

/* Validates the prelude of the message at start (12 bytes are held). */
static int check_prelude(kn_es_decoder *d, uint32_t *total, uint32_t *hlen)
{
  const uint8_t *p = d->buf + d->start;
  uint32_t want = rd32(p + 8), got = kn_crc32(0, p, 8);

  *total = rd32(p);
  *hlen = rd32(p + 4);
  if (want != got) {
    snprintf(d->detail, sizeof d->detail,
             "prelude crc 0x%08lx != computed 0x%08lx", (unsigned long)want,
             (unsigned long)got);
    return fail(d, KN_ES_EPRELUDE_CRC);
  }
  if (*total < KN_ES_OVERHEAD) {
    snprintf(d->detail, sizeof d->detail, "total_length %lu < %d",
             (unsigned long)*total, KN_ES_OVERHEAD);
    return fail(d, KN_ES_ELENGTH);
  }
  if (*total > d->max_message) {
    snprintf(d->detail, sizeof d->detail, "total_length %lu > limit %zu",
             (unsigned long)*total, d->max_message);
    return fail(d, KN_ES_ETOO_LARGE);
  }
  if (*hlen > *total - KN_ES_OVERHEAD) {
    snprintf(d->detail, sizeof d->detail,
             "headers_length %lu > total_length-16 (%lu)",
             (unsigned long)*hlen, (unsigned long)(*total - KN_ES_OVERHEAD));
    return fail(d, KN_ES_ELENGTH);
  }
  return KN_ES_OK;
}

int kn_es_decoder_next(kn_es_decoder *d, kn_es_message *out)
{
  uint32_t total, hlen;
  const uint8_t *p, *headers;
  size_t count, tail;
  int rc;

  if (d->status != 0) return d->status;
  if (d->end - d->start < KN_ES_PRELUDE_BYTES) return KN_ES_MORE;
  if ((rc = check_prelude(d, &total, &hlen)) != KN_ES_OK) return rc;
  if (d->end - d->start < total) return KN_ES_MORE;
  p = d->buf + d->start;
  if (!d->crc_ok) {
    uint32_t want = rd32(p + total - 4), got = kn_crc32(0, p, total - 4);
    if (want != got) {
      snprintf(d->detail, sizeof d->detail,
               "message crc 0x%08lx != computed 0x%08lx", (unsigned long)want,
               (unsigned long)got);
      return fail(d, KN_ES_EMESSAGE_CRC);
    }
    d->crc_ok = 1;
  }
  headers = p + KN_ES_PRELUDE_BYTES;
  tail = d->cap - d->end;
  rc = check_headers(headers, hlen, tail > 0 ? d->buf + d->end : NULL, tail,
                     &count, d->detail, sizeof d->detail);
  if (rc == KN_ES_NEED_SPACE) {
    d->wanted = (d->end - d->start) + scratch_bytes(count);
    return rc;
  }
  if (rc != KN_ES_OK) return fail(d, rc);
  out->total_length = total;
  out->headers_length = hlen;
  out->prelude_crc = rd32(p + 8);
  out->message_crc = rd32(p + total - 4);
  out->headers = headers;
  out->headers_len = hlen;
  out->payload = headers + hlen;
  out->payload_len = total - KN_ES_OVERHEAD - hlen;
  d->start += total;
  d->crc_ok = 0;
  return KN_ES_OK;
}

int kn_es_decoder_finish(kn_es_decoder *d)
{
  size_t held = d->end - d->start;
  uint32_t total, hlen;
  int rc;

  if (d->status != 0) return d->status;
  if (held == 0) return KN_ES_OK;
  if (held < KN_ES_PRELUDE_BYTES) {
    snprintf(d->detail, sizeof d->detail,
             "stream ended with %zu bytes, a prelude needs %d", held,
             KN_ES_PRELUDE_BYTES);
    return KN_ES_EINCOMPLETE;
  }
  if ((rc = check_prelude(d, &total, &hlen)) != KN_ES_OK) return rc;
  if (held < total)
    snprintf(d->detail, sizeof d->detail,
             "stream ended with %zu bytes, the message needs %lu", held,
             (unsigned long)total);
  else
    snprintf(d->detail, sizeof d->detail,
             "stream ended with %zu bytes held: a whole message was never "
             "taken by next()", held);
  return KN_ES_EINCOMPLETE;
}

size_t kn_es_decoder_wanted(const kn_es_decoder *d)
{
  return d->wanted;
}

int kn_es_decoder_lend(kn_es_decoder *d, uint8_t *buf, size_t cap,
                       uint8_t **old)
{
  size_t held = d->end - d->start;

  if (cap < held || (buf == NULL && cap != 0)) return KN_ES_NEED_SPACE;
  if (held > 0) memmove(buf, d->buf + d->start, held);
  *old = d->buf;
  d->buf = buf;
  d->cap = cap;
  d->start = 0;
  d->end = held;
  return KN_ES_OK;
}

size_t kn_es_decoder_buffered(const kn_es_decoder *d)
{
  return d->end - d->start;
}

int kn_es_decoder_should_release(const kn_es_decoder *d)
{
  if (d->cap == 0) return 0;
  if (d->status != 0) return 1;
  return d->end == d->start && d->cap > KN_ES_RETAIN_BYTES;
}

int kn_es_decoder_status(const kn_es_decoder *d)
{
  return d->status;
}

const char *kn_es_decoder_detail(const kn_es_decoder *d)
{
  return d->detail;
}

int kn_es_encode_size(const kn_es_header *headers, size_t n,
                      size_t payload_len, size_t *size, size_t *need)
{
  size_t i, hsize = 0;

  for (i = 0; i < n; i++) {
    const kn_es_header *h = &headers[i];
    int vs = value_size(h->type);
    size_t value;
    if (h->name_len == 0) return KN_ES_EEMPTY_NAME;
    if (h->name_len > 255 || h->name == NULL || vs == -2)
      return KN_ES_EHEADER;
    if (vs == -1) {
      if (h->data_len > 0xffff || (h->data == NULL && h->data_len > 0))
        return KN_ES_EHEADER;
      value = 2 + h->data_len;
    } else {
      value = (size_t)vs;
    }
    switch (h->type) {
    case KN_ES_BYTE:
      if (h->i < -128 || h->i > 127) return KN_ES_EHEADER;
      break;
    case KN_ES_INT16:
      if (h->i < -32768 || h->i > 32767) return KN_ES_EHEADER;
      break;
    case KN_ES_INT32:
      if (h->i < -2147483647 - 1 || h->i > 2147483647) return KN_ES_EHEADER;
      break;
    case KN_ES_UUID:
      if (h->data == NULL || h->data_len != 16) return KN_ES_EHEADER;
      break;
    default: break;
    }
    /* Each header is at most 1 + 255 + 1 + 2 + 65535 bytes: stop adding
     * once past the limit so the sum cannot overflow. */
    hsize += 2 + h->name_len + value;
    if (hsize > KN_ES_MAX_MESSAGE - KN_ES_OVERHEAD) return KN_ES_ETOO_LARGE;
  }
  if (payload_len > KN_ES_MAX_MESSAGE - KN_ES_OVERHEAD - hsize)
    return KN_ES_ETOO_LARGE;
  *size = KN_ES_OVERHEAD + hsize + payload_len;
  *need = *size + scratch_bytes(n);
  return KN_ES_OK;
}

int kn_es_encode(const kn_es_header *headers, size_t n,
                 const uint8_t *payload, size_t payload_len, uint8_t *out,
                 size_t out_cap, size_t *written)
{
  size_t size, need, i, count;
  uint8_t *p = out;
  int rc;

  *written = 0;
  if ((rc = kn_es_encode_size(headers, n, payload_len, &size, &need)) != 0)
    return rc;
  if (out_cap < need) return KN_ES_NEED_SPACE;
  p = wr32(p, (uint32_t)size);
  p = wr32(p, (uint32_t)(size - KN_ES_OVERHEAD - payload_len));
  p = wr32(p, kn_crc32(0, out, 8));
  for (i = 0; i < n; i++) {
    const kn_es_header *h = &headers[i];
    *p++ = (uint8_t)h->name_len;
    memcpy(p, h->name, h->name_len);
    p += h->name_len;
    *p++ = (uint8_t)h->type;
    switch (h->type) {
    case KN_ES_BOOL_TRUE:
    case KN_ES_BOOL_FALSE: break;
    case KN_ES_BYTE: *p++ = (uint8_t)((uint64_t)h->i & 0xff); break;
    case KN_ES_INT16: p = wr16(p, (uint32_t)((uint64_t)h->i & 0xffff)); break;
    case KN_ES_INT32: p = wr32(p, (uint32_t)((uint64_t)h->i & 0xffffffffu)); break;
    case KN_ES_INT64:
    case KN_ES_TIMESTAMP: p = wr64(p, (uint64_t)h->i); break;
    case KN_ES_UUID:
      memcpy(p, h->data, 16);
      p += 16;
      break;
    default:
      p = wr16(p, (uint32_t)h->data_len);
      if (h->data_len > 0) memcpy(p, h->data, h->data_len);
      p += h->data_len;
      break;
    }
  }
  rc = check_headers(out + KN_ES_PRELUDE_BYTES,
                     (size_t)(p - out) - KN_ES_PRELUDE_BYTES,
                     need > size ? out + size : NULL, need - size, &count,
                     NULL, 0);
  if (rc != KN_ES_OK) return rc;
  if (payload_len > 0) memcpy(p, payload, payload_len);
  p += payload_len;
  p = wr32(p, kn_crc32(0, out, size - 4));
  *written = size;
  return KN_ES_OK;
}

const char *kn_es_code_name(int code)
{
  switch (code) {
  case KN_ES_OK: return "ok";
  case KN_ES_MORE: return "more";
  case KN_ES_NEED_SPACE: return "need_space";
  case KN_ES_END: return "end";
  case KN_ES_EINCOMPLETE: return "incomplete";
  case KN_ES_EPRELUDE_CRC: return "prelude_crc_mismatch";
  case KN_ES_EMESSAGE_CRC: return "message_crc_mismatch";
  case KN_ES_ELENGTH: return "invalid_length";
  case KN_ES_EHEADER: return "invalid_header";
  case KN_ES_EDUPLICATE: return "duplicate_header";
  case KN_ES_EEMPTY_NAME: return "empty_header_name";
  case KN_ES_ETOO_LARGE: return "too_large";
  default: return "unknown";
  }
}
