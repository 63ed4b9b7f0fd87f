/* fuzz_eventstream.c - libFuzzer harness for the event-stream decoder
 * (src/eventstream.c). The input is a byte stream as a SubscribeToShard
 * response body would carry it. It is decoded three ways, and each way must
 * agree with the others and with the encoder:
 *   1. fed whole;
 *   2. fed in chunks whose sizes come from a PRNG seeded by the input, with
 *      buffers lent and released as the decoder asks (the streaming path);
 *   3. fed whole with a 256-byte message limit.
 * (1) and (2) must give the same messages and the same final status; (3)
 * the messages of (1) up to the first one over the limit, then too_large.
 * Every message decoded must re-encode, from its parsed headers and
 * payload, to exactly its original bytes; every header view must lie inside
 * its headers block. Any disagreement aborts, which libFuzzer reports. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eventstream.h"

#define MAX_RECORDED 256
#define SMALL_LIMIT 256

typedef struct outcome {
  size_t count;                   /* messages decoded */
  size_t len[MAX_RECORDED];       /* their total lengths */
  uint64_t digest[MAX_RECORDED];  /* FNV-1a of their bytes */
  int status;                     /* finish() or the sticky error */
} outcome;

typedef struct decoder {
  kn_es_decoder d;
  uint8_t *buf;                   /* lent to d, owned here */
} decoder;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void die(const char *what, size_t a, size_t b)
{
  fprintf(stderr, "fuzz_eventstream: %s (%zu, %zu)\n", what, a, b);
  abort();
}

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
  uint64_t h = 1469598103934665603ull;
  size_t i;
  for (i = 0; i < n; i++) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

/* Lends the decoder the capacity it asked for; the old buffer is freed. */
static void lend(decoder *x)
{
  size_t want = kn_es_decoder_wanted(&x->d);
  uint8_t *buf = malloc(want > 0 ? want : 1), *old = NULL;
  if (buf == NULL) die("out of memory", want, 0);
  if (kn_es_decoder_lend(&x->d, buf, want, &old) != KN_ES_OK)
    die("lend refused the size it asked for", want, kn_es_decoder_buffered(&x->d));
  if (old != x->buf) die("lend handed back a buffer it was not lent", 0, 0);
  free(old);
  x->buf = buf;
}

/* Re-encodes message m from its parsed parts; must equal its bytes. */
static void check_message(const kn_es_message *m)
{
  const uint8_t *raw = m->headers - KN_ES_PRELUDE_BYTES;
  kn_es_header *hs = NULL;
  size_t n = 0, cap = 0, pos = 0, size = 0, need = 0, written = 0;
  uint8_t *out;
  int rc;

  if (m->total_length != KN_ES_OVERHEAD + m->headers_len + m->payload_len)
    die("lengths do not add up", m->total_length, m->headers_len + m->payload_len);
  if (m->payload != m->headers + m->headers_len)
    die("payload does not follow the headers", 0, 0);
  for (;;) {
    kn_es_header h;
    rc = kn_es_header_read(m->headers, m->headers_len, &pos, &h);
    if (rc == KN_ES_END) break;
    if (rc != KN_ES_OK) die("a checked headers block fails to read", (size_t)-rc, pos);
    if (h.name < m->headers || h.name + h.name_len > m->headers + m->headers_len)
      die("header name outside its block", h.name_len, pos);
    if (h.data != NULL &&
        (h.data < m->headers || h.data + h.data_len > m->headers + m->headers_len))
      die("header value outside its block", h.data_len, pos);
    if (pos > m->headers_len) die("header read past its block", pos, m->headers_len);
    if (n == cap) {
      kn_es_header *p;
      cap = cap ? cap * 2 : 8;
      p = realloc(hs, cap * sizeof *hs);
      if (p == NULL) die("out of memory", cap, 0);
      hs = p;
    }
    hs[n++] = h;
  }
  rc = kn_es_encode_size(hs, n, m->payload_len, &size, &need);
  if (rc != KN_ES_OK) die("encode_size refuses a decoded message", (size_t)-rc, n);
  if (size != m->total_length) die("re-encoded size differs", size, m->total_length);
  out = malloc(need);
  if (out == NULL) die("out of memory", need, 0);
  rc = kn_es_encode(hs, n, m->payload, m->payload_len, out, need, &written);
  if (rc != KN_ES_OK) die("encode refuses a decoded message", (size_t)-rc, n);
  if (written != size || memcmp(out, raw, size) != 0)
    die("re-encoding differs from the original bytes", written, size);
  free(out);
  free(hs);
}

static void record(outcome *o, const kn_es_message *m)
{
  const uint8_t *raw = m->headers - KN_ES_PRELUDE_BYTES;
  check_message(m);
  if (o->count < MAX_RECORDED) {
    o->len[o->count] = m->total_length;
    o->digest[o->count] = fnv1a(raw, m->total_length);
  }
  o->count++;
}

/* Takes every complete message; returns 0, or the sticky error. */
static int drain(decoder *x, outcome *o)
{
  for (;;) {
    kn_es_message m;
    int rc = kn_es_decoder_next(&x->d, &m);
    if (rc == KN_ES_OK) {
      record(o, &m);
    } else if (rc == KN_ES_NEED_SPACE) {
      lend(x);
    } else if (rc == KN_ES_MORE) {
      if (kn_es_decoder_should_release(&x->d)) {
        uint8_t *old = NULL;
        if (kn_es_decoder_lend(&x->d, NULL, 0, &old) != KN_ES_OK)
          die("cannot release a drained buffer", kn_es_decoder_buffered(&x->d), 0);
        free(old);
        x->buf = NULL;
      }
      return 0;
    } else if (rc < 0) {
      if (kn_es_decoder_status(&x->d) != rc) die("error is not sticky", (size_t)-rc, 0);
      if (kn_es_decoder_next(&x->d, &m) != rc) die("error does not repeat", (size_t)-rc, 0);
      return rc;
    } else {
      die("unexpected status from next", (size_t)rc, 0);
    }
  }
}

static int feed(decoder *x, const uint8_t *p, size_t n)
{
  int rc;
  while ((rc = kn_es_decoder_feed(&x->d, p, n)) == KN_ES_NEED_SPACE) lend(x);
  return rc;
}

/* chunk_seed 0: all at once; otherwise chunk sizes from xorshift64. */
static void decode(const uint8_t *data, size_t size, size_t limit,
                   uint64_t chunk_seed, outcome *o)
{
  decoder x;
  size_t at = 0;
  int rc = 0;

  memset(o, 0, sizeof *o);
  x.buf = NULL;
  kn_es_decoder_init(&x.d, limit);
  while (at < size && rc == 0) {
    size_t n = size - at;
    if (chunk_seed != 0) {
      chunk_seed ^= chunk_seed << 13;
      chunk_seed ^= chunk_seed >> 7;
      chunk_seed ^= chunk_seed << 17;
      /* mostly tiny chunks (prelude and header boundaries), some large */
      n = (chunk_seed & 3) == 0 ? (size_t)(chunk_seed >> 8) % 4096 + 1
                                : (size_t)(chunk_seed >> 8) % 17 + 1;
      if (n > size - at) n = size - at;
    }
    rc = feed(&x, data + at, n);
    if (rc != KN_ES_OK) break;
    at += n;
    rc = drain(&x, o);
  }
  o->status = rc != 0 ? rc : kn_es_decoder_finish(&x.d);
  free(x.buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static outcome whole, chunked, small;
  size_t i;

  decode(data, size, 0, 0, &whole);
  decode(data, size, 0, fnv1a(data, size) | 1, &chunked);
  if (whole.count != chunked.count) die("message count differs when chunked", whole.count, chunked.count);
  if (whole.status != chunked.status)
    die("final status differs when chunked", (size_t)-whole.status, (size_t)-chunked.status);
  for (i = 0; i < whole.count && i < MAX_RECORDED; i++)
    if (whole.len[i] != chunked.len[i] || whole.digest[i] != chunked.digest[i])
      die("a message differs when chunked", i, whole.len[i]);

  decode(data, size, SMALL_LIMIT, 0, &small);
  for (i = 0; i < small.count && i < MAX_RECORDED; i++)
    if (small.len[i] > SMALL_LIMIT || i >= whole.count || small.digest[i] != whole.digest[i])
      die("the limited decoder passed a message it should not have", i, small.len[i]);
  if (small.count < whole.count && small.count < MAX_RECORDED) {
    if (whole.len[small.count] <= SMALL_LIMIT)
      die("the limited decoder stopped at a message within the limit", small.count,
          whole.len[small.count]);
    if (small.status != KN_ES_ETOO_LARGE)
      die("the limited decoder stopped without too_large", small.count, (size_t)-small.status);
  }
  if (small.count == whole.count && whole.status == KN_ES_OK && small.status != KN_ES_OK)
    die("the limited decoder failed a stream the default one accepts", small.count,
        (size_t)-small.status);
  return 0;
}
