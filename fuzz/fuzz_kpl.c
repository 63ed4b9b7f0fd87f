/* fuzz_kpl.c - libFuzzer harness for the KPL aggregated-record decoder and
 * encoder (src/kpl.c): GetRecords and SubscribeToShard hand it record data
 * straight from the stream, so it parses bytes anyone who can write to the
 * stream controls.
 *
 * Input: an aggregate (magic, protobuf, MD5) or bare protobuf bytes. When
 * the magic is there but the MD5 does not match (any mutation of a wrapped
 * seed), the bytes between are parsed anyway, so mutations reach the
 * protobuf decoder. Checked:
 *   - scan and parse agree (both fail, or both succeed with the same
 *     counts); parse with one array slot too few says ESPACE;
 *   - every view parse returns lies inside the input;
 *   - record_check is EINDEX exactly for the records whose key indexes fall
 *     outside the tables;
 *   - a message whose records all check encodes, and its encoding unwraps,
 *     scans and parses back to the same tables and records, and encodes
 *     again to the same bytes;
 *   - the digest itself (src/md5.c) equals OpenSSL's MD5 of the input. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "kpl.h"
#include "md5.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void die(const char *what, size_t a, size_t b)
{
  fprintf(stderr, "fuzz_kpl: %s (%zu, %zu)\n", what, a, b);
  abort();
}

typedef struct owned {
  kn_kpl_message m;
  kn_kpl_counts c;
} owned;

static void *alloc(size_t n, size_t size)
{
  void *p = calloc(n > 0 ? n : 1, size);
  if (p == NULL) die("out of memory", n, size);
  return p;
}

static void release(owned *o)
{
  free(o->m.pks);
  free(o->m.ehks);
  free(o->m.records);
  memset(o, 0, sizeof *o);
}

/* scan + parse of pb into o; returns the status (and checks they agree). */
static int decode(const uint8_t *pb, size_t len, owned *o)
{
  int rs, rp;
  memset(o, 0, sizeof *o);
  rs = kn_kpl_scan(pb, len, &o->c);
  o->m.pks = alloc(o->c.pks, sizeof *o->m.pks);
  o->m.ehks = alloc(o->c.ehks, sizeof *o->m.ehks);
  o->m.records = alloc(o->c.records, sizeof *o->m.records);
  o->m.pk_count = o->c.pks;
  o->m.ehk_count = o->c.ehks;
  o->m.record_count = o->c.records;
  rp = kn_kpl_parse(pb, len, &o->m);
  if (rs != KN_KPL_OK) {
    if (rp == KN_KPL_OK) die("parse accepts what scan refuses", (size_t)-rs, len);
    return rs;
  }
  if (rp != KN_KPL_OK) die("parse refuses what scan accepts", (size_t)-rp, len);
  if (o->m.pk_count != o->c.pks || o->m.ehk_count != o->c.ehks ||
      o->m.record_count != o->c.records)
    die("parse and scan count differently", o->m.record_count, o->c.records);
  return KN_KPL_OK;
}

static void inside(const kn_kpl_bytes *b, const uint8_t *pb, size_t len, const char *what)
{
  if (b->len > 0 && (b->ptr < pb || b->ptr + b->len > pb + len)) die(what, b->len, len);
}

static int same_bytes(const kn_kpl_bytes *a, const kn_kpl_bytes *b)
{
  return a->len == b->len && (a->len == 0 || memcmp(a->ptr, b->ptr, a->len) == 0);
}

static void check_space(const uint8_t *pb, size_t len, const kn_kpl_counts *c)
{
  /* one slot short in each array in turn must be refused */
  size_t which;
  for (which = 0; which < 3; which++) {
    size_t n[3] = { c->pks, c->ehks, c->records };
    kn_kpl_message m;
    if (n[which] == 0) continue;
    n[which]--;
    memset(&m, 0, sizeof m);
    m.pks = alloc(n[0], sizeof *m.pks);
    m.ehks = alloc(n[1], sizeof *m.ehks);
    m.records = alloc(n[2], sizeof *m.records);
    m.pk_count = n[0];
    m.ehk_count = n[1];
    m.record_count = n[2];
    if (kn_kpl_parse(pb, len, &m) != KN_KPL_ESPACE) die("parse into too small an array", which, n[which]);
    free(m.pks);
    free(m.ehks);
    free(m.records);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  const uint8_t *pb = data;
  size_t len = size, i, esize = 0, written = 0, esize2 = 0, written2 = 0;
  const uint8_t *pb2 = NULL;
  size_t len2 = 0;
  uint8_t *enc, *enc2;
  owned a, b;
  int rc, all_ok = 1;

  {
    uint8_t ours[KN_MD5_LEN], theirs[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    kn_md5(data, size, ours);
    if (EVP_Digest(data, size, theirs, &n, EVP_md5(), NULL) != 1 || n != KN_MD5_LEN)
      die("OpenSSL's MD5 failed", size, n);
    if (memcmp(ours, theirs, KN_MD5_LEN) != 0) die("md5.c differs from OpenSSL's MD5", size, 0);
  }

  rc = kn_kpl_unwrap(data, size, &pb, &len);
  if (rc == KN_KPL_OK) {
    if (pb < data || pb + len > data + size || len + KN_KPL_OVERHEAD != size)
      die("unwrap's slice is not the bytes between magic and digest", len, size);
  } else if (size > KN_KPL_OVERHEAD && memcmp(data, kn_kpl_magic, KN_KPL_MAGIC_LEN) == 0) {
    if (rc != KN_KPL_ECHECKSUM) die("wrapped bytes refused for another reason than the digest", (size_t)-rc, size);
    pb = data + KN_KPL_MAGIC_LEN;
    len = size - KN_KPL_OVERHEAD;
  } else {
    pb = data;
    len = size;
  }

  if (decode(pb, len, &a) != KN_KPL_OK) {
    release(&a);
    return 0;
  }
  check_space(pb, len, &a.c);
  for (i = 0; i < a.m.pk_count; i++) inside(&a.m.pks[i], pb, len, "partition key outside the input");
  for (i = 0; i < a.m.ehk_count; i++) inside(&a.m.ehks[i], pb, len, "hash key outside the input");
  for (i = 0; i < a.m.record_count; i++) {
    const kn_kpl_record *r = &a.m.records[i];
    int bad = r->pk_index >= a.m.pk_count || (r->has_ehk && r->ehk_index >= a.m.ehk_count);
    inside(&r->data, pb, len, "record data outside the input");
    rc = kn_kpl_record_check(&a.m, i);
    if (rc != (bad ? KN_KPL_EINDEX : KN_KPL_OK)) die("record_check", i, (size_t)-rc);
    if (bad) all_ok = 0;
  }
  if (kn_kpl_record_check(&a.m, a.m.record_count) != KN_KPL_ESPACE) die("record_check past the end", i, 0);

  rc = kn_kpl_encoded_size(&a.m, &esize);
  if (!all_ok) {
    if (rc != KN_KPL_EINDEX) die("encoded_size accepts a bad index", (size_t)-rc, 0);
    release(&a);
    return 0;
  }
  if (rc != KN_KPL_OK) die("encoded_size refuses a checked message", (size_t)-rc, 0);
  enc = alloc(esize, 1);
  if (esize > 0 && kn_kpl_encode(&a.m, enc, esize - 1, &written) != KN_KPL_ESPACE)
    die("encode into a buffer one byte short", esize, 0);
  rc = kn_kpl_encode(&a.m, enc, esize, &written);
  if (rc != KN_KPL_OK || written != esize) die("encode", (size_t)-rc, written);

  /* back again: the same tables and records. An empty message encodes to
   * magic + digest alone, which readers (aws-kinesis-agg too) take for a
   * plain record, not an aggregate: nothing to read back. */
  if (written == KN_KPL_OVERHEAD) {
    if (kn_kpl_unwrap(enc, written, &pb2, &len2) != KN_KPL_ENOTAGG) die("an empty aggregate unwraps", written, 0);
    free(enc);
    release(&a);
    return 0;
  }
  if (kn_kpl_unwrap(enc, written, &pb2, &len2) != KN_KPL_OK) die("own encoding does not unwrap", written, 0);
  if (decode(pb2, len2, &b) != KN_KPL_OK) die("own encoding does not parse", len2, 0);
  if (b.m.pk_count != a.m.pk_count || b.m.ehk_count != a.m.ehk_count ||
      b.m.record_count != a.m.record_count)
    die("round trip changes the counts", a.m.record_count, b.m.record_count);
  for (i = 0; i < a.m.pk_count; i++)
    if (!same_bytes(&a.m.pks[i], &b.m.pks[i])) die("round trip changes a partition key", i, 0);
  for (i = 0; i < a.m.ehk_count; i++)
    if (!same_bytes(&a.m.ehks[i], &b.m.ehks[i])) die("round trip changes a hash key", i, 0);
  for (i = 0; i < a.m.record_count; i++) {
    const kn_kpl_record *x = &a.m.records[i], *y = &b.m.records[i];
    if (x->pk_index != y->pk_index || x->has_ehk != y->has_ehk ||
        (x->has_ehk && x->ehk_index != y->ehk_index) || !same_bytes(&x->data, &y->data))
      die("round trip changes a record", i, 0);
  }
  if (kn_kpl_encoded_size(&b.m, &esize2) != KN_KPL_OK || esize2 != esize) die("re-encoded size", esize, esize2);
  enc2 = alloc(esize2, 1);
  if (kn_kpl_encode(&b.m, enc2, esize2, &written2) != KN_KPL_OK || written2 != written ||
      memcmp(enc, enc2, written) != 0)
    die("encoding is not stable", written, written2);
  free(enc);
  free(enc2);
  release(&a);
  release(&b);
  return 0;
}
